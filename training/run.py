"""What every training run shares, image or text: the run folder's layout, seeding, and the epoch loop that
saves a checkpoint on Ctrl-C.

Both trainers (`training.train` for GANs and VAEs, `training.text.train` for char-rnns) build their model and
callbacks, then hand them to `fit_epochs`; resuming, time budgets (`training.progress.TimeBudget`) and
publishing once (`training.distribute.publish_once`) go through the same pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.distribute import Placement, fit_replicas

logger = logging.getLogger(__name__)

DEFAULT_RUNS_ROOT = Path("runs")
# A run folder's layout, for every kind of run.
RUN_INFO_FILE = "config.json"
HISTORY_FILE = "history.json"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"


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
    save_on_interrupt: Callable[[], Path],
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
