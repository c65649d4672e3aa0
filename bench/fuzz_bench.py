"""``python -m bench fuzz [--examples N]``: the schemathesis suite of `make test`, with many more random requests."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "tests/app/test_fuzz.py"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__)
    parser.add_argument(
        "--examples", type=int, default=1000, help="examples per operation (default: %(default)s)"
    )
    options = parser.parse_args(argv)
    env = {**os.environ, "GENSERVE_FUZZ_EXAMPLES": str(options.examples)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        SUITE,
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-show-statistics",
    ]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
