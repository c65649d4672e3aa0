"""Benchmarks run on this machine: ``python -m bench NAME [options]`` runs ``bench/NAME_bench.py``."""
