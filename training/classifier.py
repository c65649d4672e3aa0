"""The evaluation classifier: a small CNN trained on a dataset's own labels, cached on disk.

Its 128-d penultimate layer gives the features for the Fréchet distance and its softmax gives p(y|x) for
the Inception Score (`training.fid`). A classifier is trained once per dataset and cached under a key made
from the data itself, so every version evaluated on the same data is scored by the same network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from genserve.store import TEMP_PREFIX
from training.datasets import ImageDataset, make_tf_dataset
from training.fid import feature_frechet_distance, inception_score

logger = logging.getLogger(__name__)

CLASSIFIER_VERSION = "cnn-v1"  # part of the cache key: bump when the architecture or training changes
FEATURE_LAYER = "features"
_FEATURE_DIM = 128
_CONV_FILTERS = (16, 32)  # one convolution and 2x2 max-pooling each
_KERNEL_SIZE = 3
_STRIDED_FILTERS = 32
# Larger images get stride-2 convolutions until the map is at most this wide, so the dense layer stays small.
_MAX_FLATTENED_SIZE = 8
_DROPOUT_RATE = 0.3
_LEARNING_RATE = 1e-3
_TARGET_TRAINING_EXAMPLES = 16_000  # examples seen in training, spread over as many epochs as that takes
_MIN_EPOCHS, _MAX_EPOCHS = 3, 30
_BATCH_SIZE = 64
# Where scores record a conditional generator's share of images classified as the class it was asked for.
LABEL_ACCURACY = "label_accuracy"


@dataclass(frozen=True)
class Predictions:
    """What the classifier makes of a set of images."""

    features: np.ndarray  # float64 [N, D]
    probabilities: np.ndarray  # float64 [N, K]

    def take(self, indices: np.ndarray) -> Predictions:
        return Predictions(self.features[indices], self.probabilities[indices])

    def accuracy(self, labels: np.ndarray) -> float:
        """The share of images whose most likely class is their entry in `labels`."""
        return float(np.mean(self.probabilities.argmax(axis=1) == labels))


def load_or_train_classifier(
    train: ImageDataset, cache_dir: Path, *, seed: int = 0
) -> tuple[keras.Model, Path]:
    """The classifier for `train`, from the cache when one was trained on the same data, else trained now."""
    if train.labels is None or train.class_names is None:
        raise ValueError(f"evaluation needs a labelled dataset, and {train.name!r} has no labels")
    path = Path(cache_dir) / "classifiers" / f"{_cache_key(train)}.keras"
    if path.is_file():
        logger.info("reusing cached classifier %s", path)
        return keras.models.load_model(path), path
    classifier = _train_classifier(train, seed)
    _save_model_atomically(classifier, path)
    return classifier, path


def predict(classifier: keras.Model, images: np.ndarray, batch_size: int) -> Predictions:
    """Features and class probabilities of `images` (float32 in [-1, 1])."""
    extractor = keras.Model(
        classifier.inputs, [classifier.get_layer(FEATURE_LAYER).output, classifier.outputs[0]]
    )
    features, logits = extractor.predict(images, batch_size=batch_size, verbose=0)
    probabilities = tf.nn.softmax(logits.astype(np.float64), axis=-1).numpy()
    return Predictions(features.astype(np.float64), probabilities)


def sample_scores(
    generated: Predictions, reference: Predictions, labels: np.ndarray | None = None
) -> dict[str, float]:
    """How generated images score against real ones: FID in the classifier's feature space, the class score
    (the Inception Score's formula on this classifier), and for conditional models the share of images
    classified as the class they were asked for. The one scoring path of evaluations and training checks."""
    scores = {
        "fid": feature_frechet_distance(generated.features, reference.features),
        "class_score": inception_score(generated.probabilities),
    }
    if labels is not None:
        scores[LABEL_ACCURACY] = generated.accuracy(labels)
    return scores


def _build_classifier(image_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A small CNN; the `features` layer is the feature extractor, the output is logits."""
    inputs = keras.Input(shape=image_shape, name="images")
    x = inputs
    for filters in _CONV_FILTERS:
        x = keras.layers.Conv2D(filters, _KERNEL_SIZE, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    while x.shape[1] > _MAX_FLATTENED_SIZE:
        x = keras.layers.Conv2D(_STRIDED_FILTERS, _KERNEL_SIZE, strides=2, padding="same", activation="relu")(
            x
        )
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(_FEATURE_DIM, activation="relu", name=FEATURE_LAYER)(x)
    dropped = keras.layers.Dropout(_DROPOUT_RATE)(features)
    logits = keras.layers.Dense(num_classes, name="logits")(dropped)
    return keras.Model(inputs, logits, name="evaluation_classifier")


def _cache_key(train: ImageDataset) -> str:
    digest = hashlib.sha256(CLASSIFIER_VERSION.encode())
    digest.update(np.ascontiguousarray(train.images).tobytes())
    digest.update(np.ascontiguousarray(train.labels).tobytes())
    digest.update(repr(train.class_names).encode())
    slug = re.sub(r"[^a-z0-9]+", "-", train.name.lower()).strip("-")[:40] or "dataset"
    height, width, channels = train.image_shape
    return f"{slug}-{height}x{width}x{channels}-{digest.hexdigest()[:12]}"


def _train_classifier(train: ImageDataset, seed: int) -> keras.Model:
    if train.class_names is None:
        raise ValueError(f"evaluation needs a labelled dataset, and {train.name!r} has no class names")
    keras.utils.set_random_seed(seed)
    classifier = _build_classifier(train.image_shape, len(train.class_names))
    classifier.compile(
        optimizer=keras.optimizers.Adam(_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = int(np.clip(np.ceil(_TARGET_TRAINING_EXAMPLES / len(train)), _MIN_EPOCHS, _MAX_EPOCHS))
    logger.info(
        "training the evaluation classifier on %d %s images for %d epochs", len(train), train.name, epochs
    )
    batches = make_tf_dataset(train, _BATCH_SIZE, seed=seed, with_labels=True, drop_remainder=False)
    started = time.monotonic()
    classifier.fit(batches, epochs=epochs, shuffle=False, verbose=0, callbacks=[_EpochLogger(epochs)])
    logger.info("classifier trained in %.1f s", time.monotonic() - started)
    return classifier


class _EpochLogger(keras.callbacks.Callback):
    """One log line per epoch instead of Keras's progress bar."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        accuracy, loss = logs.get("accuracy", float("nan")), logs.get("loss", float("nan"))
        logger.info(
            "classifier epoch %d/%d: loss %.4f, accuracy %.4f", epoch + 1, self.epochs, loss, accuracy
        )


def _save_model_atomically(model: keras.Model, path: Path) -> None:
    """Save a Keras model through a temporary file and a rename, so a concurrent reader never loads half of it.

    The model store's JSON files go through `genserve.store.write_json_atomic`; Keras writes its own file, so
    it gets a temporary path of the same kind to write to.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
