"""One training process for the distribution tests: ``python -m tests.training.distributed_worker SPEC_JSON``.

The spec names how many logical CPU devices to split the CPU into (set before TensorFlow starts, so only in
a fresh process) and the runs to train one after another, each an image model's ``config`` or a char-rnn's
``text_config``; each run's report (steps per epoch, optimizer steps, how far replica copies drift apart)
goes to ``REPORT.json`` and its weights to ``REPORT.npz``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.config import TrainConfig
from training.models import GenerativeModel, checkpoint_objects, optimizer_steps
from training.run_folder import RUN_INFO_FILE
from training.run_info import read_run_info
from training.text.config import TextTrainConfig
from training.text.train import train_text
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


def replica_spread(models: Iterable[keras.Model]) -> float:
    """The largest difference between two device copies of any variable of `models` (0 for plain variables)."""
    spread = 0.0
    for network in models:
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
        "replica_spread": replica_spread(networks(model).values()),
        "distribution": read_run_info(config.run_path).distribution,
        "version_dir": str(result.version_dir) if result.version_dir else None,
    }
    report.with_suffix(".json").write_text(json.dumps(summary))


def run_text(config: TextTrainConfig, report: Path) -> None:
    recorder = Recorder()
    version = train_text(config, callbacks=[recorder])
    # Keras fit trains the network itself; under a strategy a trainer holds it.
    network: keras.Model = getattr(recorder.model, "network", recorder.model)
    weights = {str(index): np.asarray(weight.numpy()) for index, weight in enumerate(network.weights)}
    np.savez(report.with_suffix(".npz"), **weights)  # type: ignore[arg-type]
    run_info = json.loads((config.run_folder / RUN_INFO_FILE).read_text())
    summary = {
        "steps_per_epoch": recorder.steps_per_epoch,
        "optimizer_steps": int(network.optimizer.iterations.numpy()),
        "replica_spread": replica_spread([network]),
        "distribution": run_info["distribution"],
        "version_dir": str(version) if version else None,
    }
    report.with_suffix(".json").write_text(json.dumps(summary))


def text_config(payload: dict[str, Any]) -> TextTrainConfig:
    paths = {key: Path(payload[key]) for key in ("store", "run_dir")}
    return TextTrainConfig(**{**payload, **paths})


def main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    devices = int(spec.get("logical_cpus", 1))
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    for item in spec["runs"]:
        if "text_config" in item:
            run_text(text_config(item["text_config"]), Path(item["report"]))
        else:
            run(TrainConfig.from_dict(item["config"]), Path(item["report"]))


if __name__ == "__main__":
    main(sys.argv[1])
