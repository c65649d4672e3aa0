"""One training process for the distribution tests: ``python -m tests.training.distributed_worker SPEC_JSON``.

The spec names how many logical CPU devices to split the CPU into (set before TensorFlow starts, so only in
a fresh process) and the runs to train one after another; each run's report (steps per epoch, optimizer
steps, how far replica copies drift apart) goes to ``REPORT.json`` and its weights to ``REPORT.npz``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.config import TrainConfig, read_run_info
from training.models import GenerativeModel, checkpoint_objects, optimizer_steps
from training.train import train


class Recorder(keras.callbacks.Callback):
    """Counts the steps of every epoch and keeps the model for the report."""

    def __init__(self) -> None:
        super().__init__()
        self.steps_per_epoch: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps_per_epoch.append(0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps_per_epoch[-1] += 1


def networks(model: GenerativeModel) -> dict[str, keras.Model]:
    objects = checkpoint_objects(model)
    return {name: value for name, value in objects.items() if isinstance(value, keras.Model)}


def replica_spread(model: GenerativeModel) -> float:
    """The largest difference between two device copies of any network variable (0 for plain variables)."""
    spread = 0.0
    for network in networks(model).values():
        for weight in network.weights:
            copies = [np.asarray(copy) for copy in getattr(weight.value, "values", (weight.value,))]
            spread = max([spread, *(float(np.abs(copy - copies[0]).max()) for copy in copies)])
    return spread


def run(config: TrainConfig, report: Path) -> None:
    recorder = Recorder()
    result = train(config, callbacks=[recorder])
    model: GenerativeModel = recorder.model
    weights = {
        f"{name}/{index}": np.asarray(weight.numpy())
        for name, network in networks(model).items()
        for index, weight in enumerate(network.weights)
    }
    np.savez(report.with_suffix(".npz"), **weights)  # type: ignore[arg-type]
    summary = {
        "steps_per_epoch": recorder.steps_per_epoch,
        "optimizer_steps": int(optimizer_steps(model).numpy()),
        "epochs_completed": result.epochs_completed,
        "replica_spread": replica_spread(model),
        "distribution": read_run_info(config.run_path).distribution,
        "version_dir": str(result.version_dir) if result.version_dir else None,
    }
    report.with_suffix(".json").write_text(json.dumps(summary))


def main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    devices = int(spec.get("logical_cpus", 1))
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    for item in spec["runs"]:
        run(TrainConfig.from_dict(item["config"]), Path(item["report"]))


if __name__ == "__main__":
    main(sys.argv[1])
