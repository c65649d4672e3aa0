"""The skeleton every training run shares, image or text: seeding with deterministic ops, the epoch loop that
saves a checkpoint on Ctrl-C, and a wall-time budget.

Both trainers (`training.train` for GANs and VAEs, `training.text.train` for char-rnns) seed with
`seed_everything`, lay out their run folder as `training.run_folder` says, build their model and callbacks
(`TimeBudget` among them when a budget is set), hand them to `fit_epochs`, and publish once through
`training.distribute.publish_once`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.distribute import Placement, fit_replicas

logger = logging.getLogger(__name__)

_SECONDS_PER_MINUTE = 60.0


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic, so a seed fixes the weights."""
    if seed is None:
        return
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit_epochs(
    model: keras.Model,
    data: Any,
    placement: Placement,
    *,
    epochs: int,
    initial_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback],
    save_on_interrupt: Callable[[], Path | str],
    verbose: int,
    validation_data: Any = None,
) -> keras.callbacks.History | None:
    """Train epochs `initial_epoch` to `epochs`: Keras `fit` on one device, `fit_replicas` under a strategy.

    On Ctrl-C, `save_on_interrupt` writes a checkpoint (of the weights as they are, counted as the last
    completed epoch) before the KeyboardInterrupt propagates, so the run can go on with `--resume`.
    `validation_data` is for Keras `fit`; a distributed run validates in a callback of its own.
    """
    try:
        if placement.distributed:
            fit_replicas(
                model,
                data,
                placement,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=list(callbacks),
                verbose=verbose,
            )
            return None
        return model.fit(
            data,
            validation_data=validation_data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=list(callbacks),
            verbose=verbose,
            shuffle=False,  # the tf.data pipelines reshuffle every epoch themselves
        )
    except KeyboardInterrupt:
        path = save_on_interrupt()
        logger.warning("interrupted: saved %s; continue with --resume", path)
        raise


class TimeBudget(keras.callbacks.Callback):
    """Stop training once the next epoch would end after `minutes` of wall time since the start.

    The next epoch is expected to take as long as the longer of the last two (every other epoch may carry a
    quality check), so a run ends within its budget unless one epoch alone is longer than the whole budget:
    the first epoch always runs.
    """

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if not minutes > 0:
            raise ValueError(f"a time budget must be a positive number of minutes, got {minutes}")
        self.seconds = minutes * _SECONDS_PER_MINUTE
        self.exhausted = False
        self._clock = clock
        self._started = 0.0
        self._last_end = 0.0
        self._last_epoch_s = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = self._last_end = self._clock()
        self._last_epoch_s = 0.0
        self.exhausted = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = self._clock()
        epoch_s = now - self._last_end
        next_epoch_s = max(epoch_s, self._last_epoch_s)
        self._last_end, self._last_epoch_s = now, epoch_s
        elapsed = now - self._started
        if elapsed + next_epoch_s > self.seconds:
            self.exhausted = True
            self.model.stop_training = True
            logger.info(
                "stopping after epoch %d (%.2f min): another epoch of about %.1f min would overrun the "
                "%g min time budget",
                epoch + 1,
                elapsed / _SECONDS_PER_MINUTE,
                next_epoch_s / _SECONDS_PER_MINUTE,
                self.seconds / _SECONDS_PER_MINUTE,
            )
