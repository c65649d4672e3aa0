"""Training side effects as Keras callbacks: sample grids, checkpoints and the per-epoch history."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from genserve.conventions import latents_from_seeds, tile_images, to_uint8
from genserve.store import write_json_atomic
from training.dcgan import DCGAN
from training.models import GenerativeModel, checkpoint_objects, optimizer_steps
from training.run_folder import (
    BEST_DIR,
    BEST_FILE,
    CHECKPOINTS_DIR,
    HISTORY_FILE,
    RUN_INFO_FILE,
    SAMPLES_DIR,
    STOPPED_ON_TIME_BUDGET_KEY,
)
from training.run_info import RunInfo
from training.vae import VAE

logger = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 3


def _save_png(pixels: np.ndarray, path: Path) -> None:
    """Write a uint8 ``[H, W, C]`` array (C is 1 or 3) as a PNG, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    image.save(path)


class SampleGrid(keras.callbacks.Callback):
    """After every epoch, draw the same fixed-seed latents and save them as one PNG grid.

    For a conditional model each row is one class and each column one fixed seed, so a column shows
    how the same latent looks as every class.
    """

    def __init__(
        self, run_dir: Path, latent_dim: int, grid_size: int, num_classes: int | None = None
    ) -> None:
        super().__init__()
        self.folder = Path(run_dir) / SAMPLES_DIR
        self.grid_size = grid_size
        self.labels: np.ndarray | None = None
        if num_classes is None:
            self.latents = latents_from_seeds(range(grid_size * grid_size), latent_dim)
        else:
            self.latents = np.tile(latents_from_seeds(range(grid_size), latent_dim), (num_classes, 1))
            self.labels = np.repeat(np.arange(num_classes, dtype=np.int32), grid_size)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.save(epoch + 1)

    def save(self, epoch: int) -> Path:
        """Render the grid with the averaged generator when there is one, and return the PNG's path."""
        gan = self.model
        if not isinstance(gan, DCGAN | VAE):
            raise TypeError(f"SampleGrid needs a DCGAN or VAE model, got {type(gan).__name__}")
        generator = gan.ema_generator if gan.ema_generator is not None else gan.generator
        inputs = self.latents if self.labels is None else [self.latents, self.labels]
        images = to_uint8(np.asarray(generator(inputs, training=False)))
        path = self.folder / f"epoch_{epoch:03d}.png"
        _save_png(tile_images(images, self.grid_size), path)
        return path


class Checkpointer(keras.callbacks.Callback):
    """Keep the last few checkpoints of everything needed to resume, plus the run's config.json.

    A checkpoint holds every network (for a GAN the averaged generator too), the optimizers (and so the
    step counter in their iterations), the noise generator's state and the number of completed epochs.
    Checkpoints are written to `run_dir` and resumed from `restore_from` (default `run_dir`): in a multi-worker
    run every worker saves (saving reads variables synchronised across workers) into its own folder, and
    every worker resumes from the chief's. An epoch whose logs hold a FID (`SampleQuality`, which must come
    before this callback) lower than every earlier one is also kept in `run_dir/best`, with its record.
    """

    def __init__(
        self, gan: GenerativeModel, run_dir: Path, run_info: RunInfo, restore_from: Path | None = None
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.restore_dir = Path(restore_from) if restore_from is not None else self.run_dir
        self.run_info = run_info
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.gan = gan
        self.checkpoint = tf.train.Checkpoint(**checkpoint_objects(gan), epoch=self.epoch, step=self.step)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.run_dir / CHECKPOINTS_DIR), max_to_keep=CHECKPOINTS_KEPT
        )
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.run_dir / BEST_DIR), max_to_keep=1
        )
        best = read_best(self.run_dir)  # a resumed run goes on from the best of its earlier epochs
        self.best_fid: float | None = best["fid"] if best is not None else None

    @property
    def latest(self) -> str | None:
        """The newest checkpoint to resume from, if any."""
        if self.restore_dir == self.run_dir:
            return self.manager.latest_checkpoint
        latest: str | None = tf.train.latest_checkpoint(str(self.restore_dir / CHECKPOINTS_DIR))
        return latest

    def restore_latest(self) -> int:
        """Restore the newest checkpoint, if any, and return how many epochs it had completed."""
        path = self.latest
        if path is None:
            return 0
        self.gan.build_optimizers()
        self.checkpoint.restore(path).assert_existing_objects_matched()
        logger.info("resumed from %s: epoch %d, step %d", path, int(self.epoch), int(self.step))
        return int(self.epoch)

    def save(self, epochs_completed: int) -> str:
        """Save a checkpoint after `epochs_completed` full epochs and return its path."""
        self.epoch.assign(epochs_completed)
        self.step.assign(optimizer_steps(self.gan))
        path: str = self.manager.save(checkpoint_number=int(self.step))
        logger.info("saved checkpoint %s", path)
        return path

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.write_run_info()

    def write_run_info(self) -> None:
        """(Re)write the run's config.json: what a later export of its checkpoints will read."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / RUN_INFO_FILE, self.run_info.to_dict())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.save(epoch + 1)
        fid = (logs or {}).get("fid")
        if fid is not None:
            self.keep_if_best(epoch + 1, float(fid))

    def keep_if_best(self, epochs_completed: int, fid: float) -> None:
        """Keep the checkpoint just saved as the run's best if its FID beats every earlier one."""
        if self.best_fid is not None and self.best_fid <= fid:
            return
        path = self.best_manager.save(checkpoint_number=int(self.step))
        record = {"epoch": epochs_completed, "fid": fid, "checkpoint": Path(path).name}
        write_json_atomic(self.run_dir / BEST_DIR / BEST_FILE, record)
        self.best_fid = fid
        logger.info("epoch %d has the lowest FID so far (%.3f): kept as %s", epochs_completed, fid, path)


def read_best(run_dir: Path) -> dict[str, Any] | None:
    """A run's best-checkpoint record, with `checkpoint` as a full prefix; None if it has none."""
    path = Path(run_dir) / BEST_DIR / BEST_FILE
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    return record | {"checkpoint": str(Path(run_dir) / BEST_DIR / record["checkpoint"])}


class HistoryWriter(keras.callbacks.Callback):
    """Append each epoch's losses, throughput and wall time to run_dir/history.json, atomically.

    A run stopped by its time budget says so there too (`record_time_budget_stop`), so that a checkpoint
    exported from the run folder later records it; a resumed run's next epoch drops that mark.
    """

    def __init__(self, run_dir: Path, batch_size: int, initial_epoch: int = 0) -> None:
        super().__init__()
        self.path = Path(run_dir) / HISTORY_FILE
        self.batch_size = batch_size
        self.epochs = self._earlier_epochs(initial_epoch)
        self._started = 0.0
        self._batches = 0

    def _earlier_epochs(self, initial_epoch: int) -> list[dict[str, Any]]:
        """Entries of a resumed run up to its checkpoint; later ones were not checkpointed and are redone."""
        if initial_epoch == 0 or not self.path.is_file():
            return []
        entries = json.loads(self.path.read_text()).get("epochs", [])
        return [entry for entry in entries if entry["epoch"] <= initial_epoch]

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()
        self._batches = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._started
        images = self._batches * self.batch_size
        entry: dict[str, Any] = {key: float(value) for key, value in (logs or {}).items()}
        entry.update(
            epoch=epoch + 1,
            images=images,
            images_per_second=images / seconds if seconds > 0 else 0.0,
            wall_seconds=seconds,
        )
        self.epochs.append(entry)
        self._write()

    def record_time_budget_stop(self, epoch: int) -> None:
        """Note in history.json that the time budget stopped the run after `epoch`."""
        self._write({STOPPED_ON_TIME_BUDGET_KEY: epoch})

    def _write(self, extra: dict[str, Any] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"epochs": self.epochs, **(extra or {})})
