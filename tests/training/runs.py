"""What the training tests share: a small run on the shapes data, and pressing Ctrl-C inside a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from training.config import TrainConfig

SHAPES_MODEL = "shapes-dcgan"
SHAPES_LATENT_DIM = 16


class InterruptAt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt after the first batch of epoch `epoch` (counted from 0)."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch
        self.current = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.current = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.current == self.epoch:
            raise KeyboardInterrupt


def shapes_config(root: Path, **changes: Any) -> TrainConfig:
    """Two epochs of 64 shapes images in batches of 32, into `root`/store and `root`/run, with `changes`."""
    options: dict[str, Any] = {
        "dataset": "shapes",
        "name": SHAPES_MODEL,
        "limit": 64,
        "batch_size": 32,
        "epochs": 2,
        "latent_dim": SHAPES_LATENT_DIM,
        "store": root / "store",
        "run_dir": root / "run",
    }
    return TrainConfig(**(options | changes))
