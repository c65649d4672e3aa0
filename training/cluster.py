"""``python -m training.cluster train ...``: `python -m training` with TF_CONFIG built for one worker of a Job.

A Kubernetes Indexed Job gives each pod its completion index (JOB_COMPLETION_INDEX) and, with a headless
Service as its subdomain, a stable name ``<job>-<index>.<service>``. From those, the number of workers and
the port, every worker derives the same cluster and its own task, so one pod template serves them all:

    TRAIN_JOB_NAME      the Job's name (the downward API's ``metadata.labels['job-name']``)
    TRAIN_SERVICE       the headless Service that names the pods
    TRAIN_WORKERS       how many workers (the Job's ``completions`` and ``parallelism``)
    TRAIN_PORT          the port the workers talk on (default 2222)
    JOB_COMPLETION_INDEX   set by Kubernetes: this worker's index; 0 is the chief

An existing TF_CONFIG is left alone, so the same entrypoint also runs where the cluster is described by hand.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from training.distribute import TF_CONFIG_VARIABLE

DEFAULT_PORT = 2222
_INDEX = "JOB_COMPLETION_INDEX"
_JOB = "TRAIN_JOB_NAME"
_SERVICE = "TRAIN_SERVICE"
_WORKERS = "TRAIN_WORKERS"
_PORT = "TRAIN_PORT"


def tf_config(
    index: int, workers: int, *, job: str, service: str, port: int = DEFAULT_PORT
) -> dict[str, Any]:
    """The TF_CONFIG of worker `index` of `workers` pods named ``<job>-<i>.<service>``."""
    if workers < 1 or not 0 <= index < workers:
        raise ValueError(f"worker index {index} is outside a cluster of {workers} workers")
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    addresses = [f"{job}-{worker}.{service}:{port}" for worker in range(workers)]
    return {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}


def tf_config_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """`tf_config` from a pod's environment, or ValueError naming what is missing."""
    missing = [name for name in (_INDEX, _JOB, _SERVICE, _WORKERS) if not env.get(name)]
    if missing:
        raise ValueError(f"cannot build TF_CONFIG: set {', '.join(missing)} (see python -m training.cluster)")
    try:
        index, workers, port = int(env[_INDEX]), int(env[_WORKERS]), int(env.get(_PORT, DEFAULT_PORT))
    except ValueError as error:
        raise ValueError(f"{_INDEX}, {_WORKERS} and {_PORT} must be integers ({error})") from None
    return tf_config(index, workers, job=env[_JOB], service=env[_SERVICE], port=port)


def main(argv: Sequence[str] | None = None) -> int:
    """Set TF_CONFIG (unless already set) and run ``python -m training`` with `argv`."""
    if TF_CONFIG_VARIABLE not in os.environ:
        try:
            os.environ[TF_CONFIG_VARIABLE] = json.dumps(tf_config_from_env(os.environ))
        except ValueError as error:
            print(f"python -m training.cluster: error: {error}", file=sys.stderr)
            return 2
    from training.cli import main as training_main

    return training_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
