"""Watching and bounding a run: a small-N sample-quality check every few epochs, and a wall-time budget.

`SampleQuality` scores the (averaged) generator with the evaluation classifier of `training.evaluate`, on
fewer images than a full evaluation, so the numbers show the trend during training; they are biased upwards
against N = 10,000 numbers and compare only with each other. (Bounding a run's wall time is every run's:
`training.run.TimeBudget`.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from genserve.conventions import cycled_labels, to_uint8, to_unit_range
from training import classifier
from training.datasets import ImageDataset, default_cache_dir
from training.dcgan import DCGAN

logger = logging.getLogger(__name__)

_BATCH_SIZE = 250
_SECONDS_PER_MINUTE = 60.0


class SampleQuality(keras.callbacks.Callback):
    """Every `every` epochs, put the FID and class score of `num_samples` generated images into the logs.

    The logs reach the progress line and `HistoryWriter` (which must come after this callback). The same
    seeded latents are drawn each time, so changes between epochs come from the generator alone.
    Conditional models are asked for every class in turn and also get ``label_accuracy``.
    """

    def __init__(
        self,
        train_set: ImageDataset,
        every: int,
        num_samples: int,
        *,
        latent_dim: int,
        seed: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__()
        if every < 1 or num_samples < 2:
            raise ValueError(
                f"need every >= 1 and num_samples >= 2, got every={every}, num_samples={num_samples}"
            )
        self.train_set = train_set
        self.every = every
        self.num_samples = num_samples
        self.seed = seed
        self.cache_dir = cache_dir or default_cache_dir()
        self.latents = np.random.RandomState(seed).randn(num_samples, latent_dim).astype(np.float32)
        self._classifier: keras.Model | None = None
        self._reference: classifier.Predictions | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._classifier, _ = classifier.load_or_train_classifier(
            self.train_set, self.cache_dir, seed=self.seed
        )
        rows = np.random.RandomState(self.seed).permutation(len(self.train_set))[: self.num_samples]
        self._reference = classifier.predict(
            self._classifier, self.train_set.images[np.sort(rows)], _BATCH_SIZE
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every != 0 or logs is None:
            return
        scores = self.measure()
        logs.update(scores)
        logger.info(
            "epoch %d: %s at N=%d",
            epoch + 1,
            ", ".join(f"{key} {value:.3f}" for key, value in scores.items()),
            self.num_samples,
        )

    def measure(self) -> dict[str, float]:
        """FID and class score of the current generator's images; label accuracy for conditional models."""
        if self._classifier is None or self._reference is None:
            raise RuntimeError("SampleQuality.measure runs after on_train_begin has loaded the classifier")
        gan = self.model
        if not isinstance(gan, DCGAN):
            raise TypeError(f"SampleQuality scores GANs, got {type(gan).__name__}")
        labels = self._labels(gan)
        images = self._generate(gan, labels)
        generated = classifier.predict(self._classifier, images, _BATCH_SIZE)
        return classifier.sample_scores(generated, self._reference, labels)

    def _labels(self, gan: DCGAN) -> np.ndarray | None:
        num_classes = getattr(gan, "num_classes", None)
        return None if num_classes is None else cycled_labels(self.num_samples, num_classes)

    def _generate(self, gan: DCGAN, labels: np.ndarray | None) -> np.ndarray:
        """Images as the published model would make them: rounded to uint8, back in [-1, 1]."""
        generator = gan.ema_generator if gan.ema_generator is not None else gan.generator
        batches = []
        for start in range(0, self.num_samples, _BATCH_SIZE):
            rows = slice(start, start + _BATCH_SIZE)
            inputs = self.latents[rows] if labels is None else [self.latents[rows], labels[rows]]
            batches.append(to_uint8(np.asarray(generator(inputs, training=False), dtype=np.float32)))
        return to_unit_range(np.concatenate(batches))
