"""Pseudo-classes found again as the discriminator learns (`--recluster-every`): the self-conditioned GAN.

A run on images without labels starts from k-means clusters of their pixels (`training.clusters`). Every
`--recluster-every` epochs, `Reclustering` puts every training image through the discriminator's feature layers
(what its projection head compares with a class embedding), and `clusters.refine_clusters` moves each image to the
cluster whose members it now looks most like there. The training batches read their classes from
`PseudoLabels.table`, a variable, so the next epoch trains on the new classes; the classes are written to the run
folder each time (`pseudo_classes.npy`), so a resumed run and its export use the classes it trained on last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.clusters import PseudoClasses, refine_clusters

logger = logging.getLogger(__name__)

PSEUDO_CLASSES_FILE = "pseudo_classes.npy"
# The discriminator's features are projected on this many random directions as they are computed (distances are
# nearly kept), so that every image's features fit in memory whatever the discriminator's width.
PROJECTED_DIMENSIONS = 512
# The discriminator layer whose output is its features (`training.cdcgan`'s projection head).
FEATURES_LAYER = "features_float32"
_BATCH = 500


class PseudoLabels:
    """The classes of a run's training images: a variable the batches read, kept in the run folder."""

    def __init__(self, found: PseudoClasses, run_dir: Path) -> None:
        self.path = Path(run_dir) / PSEUDO_CLASSES_FILE
        self.table = tf.Variable(found.labels, trainable=False, dtype=tf.int32, name="pseudo_classes")
        self.count = found.count

    @classmethod
    def resumed_or_new(cls, found: PseudoClasses, run_dir: Path) -> PseudoLabels:
        """The classes the run folder holds (a resumed run's last ones), else `found`."""
        saved = read_pseudo_classes(run_dir, found.count)
        return cls(saved if saved is not None else found, run_dir)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.table.numpy(), dtype=np.int32)

    def weights(self) -> list[float]:
        counts = np.bincount(self.labels, minlength=self.count)
        return [float(share) for share in counts / counts.sum()]

    def assign(self, found: PseudoClasses) -> None:
        self.table.assign(found.labels)
        self.save()

    def save(self) -> None:
        partial = self.path.with_name(f".{self.path.name}.partial.npy")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.save(partial, self.labels)
        partial.replace(self.path)


def read_pseudo_classes(run_dir: Path, count: int) -> PseudoClasses | None:
    """The classes a run folder keeps, with their shares, or None if it keeps none."""
    path = Path(run_dir) / PSEUDO_CLASSES_FILE
    if not path.is_file():
        return None
    labels = np.load(path).astype(np.int32)
    counts = np.bincount(labels, minlength=count)
    return PseudoClasses(labels, counts / counts.sum())


def discriminator_features(discriminator: keras.Model, images: np.ndarray, seed: int) -> np.ndarray:
    """Every image's discriminator features, projected on `PROJECTED_DIMENSIONS` random directions (seeded)."""
    try:
        extractor = keras.Model(discriminator.inputs[0], discriminator.get_layer(FEATURES_LAYER).output)
    except ValueError as error:
        raise ValueError(
            "re-clustering reads the features of a projection discriminator: use --conditioning projection"
        ) from error
    width = int(extractor.output.shape[-1])
    directions = min(PROJECTED_DIMENSIONS, width)
    projection = np.random.default_rng(seed).standard_normal((width, directions)).astype(np.float32)
    projection /= np.sqrt(directions)
    rows = []
    for start in range(0, len(images), _BATCH):
        features = np.asarray(extractor(images[start : start + _BATCH], training=False))
        rows.append(features @ projection if directions < width else features)
    return np.concatenate(rows)


class Reclustering(keras.callbacks.Callback):
    """Every `every` epochs, the images' classes found again in the discriminator's features."""

    def __init__(self, labels: PseudoLabels, images: np.ndarray, every: int, seed: int) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"re-clustering needs a period of at least 1 epoch, got {every}")
        self.labels = labels
        self.images = images
        self.every = every
        self.seed = seed

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        discriminator = self.model.discriminator
        features = discriminator_features(discriminator, self.images, self.seed + epoch)
        before = self.labels.labels
        found = refine_clusters(features, before, self.labels.count, self.seed + epoch)
        self.labels.assign(found)
        if logs is not None:
            logs["pseudo_classes_moved"] = float(np.mean(found.labels != before))
