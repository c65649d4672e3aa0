"""A training run's folder, for every kind of run: where it is by default and what it holds."""

from __future__ import annotations

from pathlib import Path

DEFAULT_RUNS_ROOT = Path("runs")
RUN_INFO_FILE = "config.json"
HISTORY_FILE = "history.json"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
# Multi-worker runs: each non-chief worker's own folder, removed when it finishes.
WORKERS_DIR = "workers"
# Multi-worker runs: the version the chief published, so that a restart does not publish again.
PUBLISHED_FILE = "published.json"
