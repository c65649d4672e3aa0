"""The dataset type, the train/test split rule and the `tf.data` pipeline that feeds training."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tensorflow as tf

Split = Literal["train", "test"]

HELD_OUT_EVERY = 10


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset path that does not exist; also a ValueError so callers can treat it as bad input."""


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images scaled to [-1, 1], with optional integer labels and their names."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str] | None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.float32:
            shape, dtype = self.images.shape, self.images.dtype
            raise ValueError(f"images must be float32 [N, H, W, C], got {dtype} {shape}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {self.labels.shape}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        height, width, channels = (int(size) for size in self.images.shape[1:])
        return height, width, channels

    def __len__(self) -> int:
        return int(self.images.shape[0])


def default_cache_dir() -> Path:
    """Where genserve keeps what it makes once and reuses (trained classifiers, rendered clips):
    $XDG_CACHE_HOME/genserve, else ~/.cache/genserve."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genserve"


def make_tf_dataset(
    dataset: ImageDataset,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    with_labels: bool = False,
    drop_remainder: bool = True,
    label_table: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Batches of images, or of (images, labels) when `with_labels`, reshuffled every epoch.

    With a `label_table` (int32 ``[N]``, one label per image) the labels are read from it as each batch is made,
    not fixed when the pipeline is built, so a run can change its images' classes between epochs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if drop_remainder and batch_size > len(dataset):
        raise ValueError(
            f"batch_size {batch_size} is larger than dataset {dataset.name!r} ({len(dataset)} images), so no "
            "full batch exists: lower the batch size or pass drop_remainder=False"
        )
    if with_labels and dataset.labels is None:
        raise ValueError(
            f"dataset {dataset.name!r} has no labels: pass with_labels=False or use labelled data"
        )
    if label_table is not None:
        indices = np.arange(len(dataset), dtype=np.int32)
        tensors: object = (dataset.images, indices)
    else:
        tensors = (dataset.images, dataset.labels) if with_labels else dataset.images
    pipeline = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        pipeline = pipeline.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True)
    pipeline = pipeline.batch(batch_size, drop_remainder=drop_remainder)
    if label_table is not None:
        table = label_table
        pipeline = pipeline.map(lambda images, rows: (images, tf.gather(table, rows)))
    return pipeline.prefetch(tf.data.AUTOTUNE)


def held_out_mask(count: int, split: Split) -> np.ndarray:
    """True for the examples of `split` under the every-tenth hold-out rule."""
    if count < HELD_OUT_EVERY:
        return np.ones(count, dtype=bool)
    is_test = np.arange(count) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    return is_test if split == "test" else ~is_test
