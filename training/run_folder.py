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
# history.json key: the epoch after which the run's time budget stopped it (absent while a run can go on).
STOPPED_ON_TIME_BUDGET_KEY = "stopped_on_time_budget_after_epoch"
PRIOR_DIR = "prior"  # VAEs with a flow prior: the flow's weights, fit to the run's last epoch
# GANs trained with eval_every: the checkpoint whose epoch scored the lowest small-N FID so far, and its record.
BEST_DIR = "best"
BEST_FILE = "best.json"
