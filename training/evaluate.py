"""Sample-quality numbers for a published version: Fréchet distance and Inception-style score.

Both use a small CNN classifier trained on the dataset's own labels (cached on disk) instead of an
ImageNet Inception network: its 128-d penultimate layer gives the features for the Fréchet distance and
its softmax gives p(y|x) for the score. The numbers are comparable between versions evaluated on the same
dataset, not with published FID/IS values. A reference row computed from real held-out images shows what
"as good as real data" looks like at the same sample count. Conditional models are asked for every class
in turn, and the share of their images the classifier puts in the class asked for is their label accuracy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from genserve.store import (
    ENCODE_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_OUTPUT,
    LABEL_INPUT,
    LATENT_INPUT,
    LATENT_MEAN_OUTPUT,
    SIGNATURE_NAME,
    EvaluationRecord,
    ModelMetadata,
    read_metadata,
    write_evaluation,
)
from training.datasets import ImageDataset, load_dataset, make_tf_dataset, to_uint8

logger = logging.getLogger(__name__)

CLASSIFIER_VERSION = "cnn-v1"  # part of the cache key: bump when the architecture or training changes
FEATURE_LAYER = "features"
_TARGET_TRAINING_EXAMPLES = 16_000  # examples seen in training, spread over as many epochs as that takes
_MIN_EPOCHS, _MAX_EPOCHS = 3, 30
_CLASSIFIER_BATCH_SIZE = 64


@dataclass(frozen=True)
class _Predictions:
    features: np.ndarray  # float64 [N, D]
    probabilities: np.ndarray  # float64 [N, K]


def default_cache_dir() -> Path:
    """Where trained classifiers are kept: $XDG_CACHE_HOME/genserve, else ~/.cache/genserve."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genserve"


def evaluate_command(
    version_dir: Path,
    *,
    dataset: str,
    data_path: str | None,
    num_samples: int,
    cache_dir: Path | None,
    seed: int,
) -> EvaluationRecord:
    """Evaluate a version against `dataset` at the model's image size, store and print the result."""
    metadata = read_metadata(version_dir)
    height, width, channels = metadata.image_shape
    if height != width:
        raise ValueError(f"evaluation needs square images, the model makes {height}x{width}")
    options: dict[str, Any] = {
        "data_path": data_path,
        "image_size": height,
        "channels": channels,
        "seed": seed,
    }
    train = load_dataset(dataset, split="train", **options)
    held_out = load_dataset(dataset, split="test", **options)
    record = evaluate_version(
        Path(version_dir),
        train=train,
        held_out=held_out,
        num_samples=num_samples,
        cache_dir=cache_dir,
        seed=seed,
    )
    write_evaluation(Path(version_dir), record)
    print(format_record(record))
    return record


def evaluate_version(
    version_dir: Path,
    *,
    train: ImageDataset,
    held_out: ImageDataset,
    num_samples: int = 10_000,
    cache_dir: Path | None = None,
    seed: int = 0,
    batch_size: int = 250,
) -> EvaluationRecord:
    """Score `num_samples` generated images against `train`, with held-out real images as reference."""
    _check_inputs(train, held_out, num_samples, batch_size)
    metadata = read_metadata(version_dir)
    _check_shape(tuple(metadata.image_shape), train)
    _check_classes(metadata, train)
    started = time.monotonic()
    classifier, classifier_path = load_or_train_classifier(train, cache_dir or default_cache_dir(), seed=seed)
    rng = np.random.RandomState(seed)
    reference = _predict(classifier, train.images[_subset(len(train), num_samples, rng)], batch_size)
    held_out_all = _predict(classifier, held_out.images, batch_size)
    accuracy = float(np.mean(held_out_all.probabilities.argmax(axis=1) == held_out.labels))
    real = _take(held_out_all, _subset(len(held_out), num_samples, rng))
    loaded = tf.saved_model.load(str(version_dir))
    generated_images = _generate(loaded, metadata, num_samples, seed=seed, batch_size=batch_size)
    _check_shape(tuple(generated_images.shape[1:]), train)  # the metadata could disagree with the graph
    generated = _predict(classifier, _to_unit_range(generated_images), batch_size)
    logger.info("classifier accuracy on held-out images: %.4f", accuracy)
    details: dict[str, Any] = {}
    if metadata.conditional:
        requested = generated_labels(num_samples, len(metadata.class_names or []))
        details["label_accuracy"] = float(np.mean(generated.probabilities.argmax(axis=1) == requested))
        logger.info("generated images classified as their requested class: %.4f", details["label_accuracy"])
    if metadata.has_encoder:
        subset = _subset(len(held_out), num_samples, rng)
        details.update(_reconstruction_details(loaded, classifier, held_out, subset, reference, batch_size))
    return EvaluationRecord(
        dataset=train.name,
        num_samples=num_samples,
        fid=_features_distance(generated, reference),
        inception_score=inception_score(generated.probabilities),
        real_fid=_features_distance(real, reference),
        real_inception_score=inception_score(real.probabilities),
        classifier_accuracy=accuracy,
        details={
            "real_num_samples": len(real.features),
            "reference_num_samples": len(reference.features),
            "feature_dim": int(reference.features.shape[1]),
            "num_classes": int(reference.probabilities.shape[1]),
            "generated_class_fractions": _class_fractions(generated.probabilities),
            "classifier": classifier_path.name,
            "seed": seed,
            "seconds": round(time.monotonic() - started, 1),
            **details,
        },
    )


def format_record(record: EvaluationRecord) -> str:
    """A small plain-text table of the model's numbers next to the real-data reference."""
    real_n = record.details.get("real_num_samples", "-")
    rows = [
        f"{'':<8}{'samples':>10}{'FID':>12}{'IS':>10}",
        f"{'model':<8}{record.num_samples:>10}{record.fid:>12.3f}{record.inception_score:>10.3f}",
        f"{'real':<8}{real_n:>10}{_number(record.real_fid):>12}{_number(record.real_inception_score):>10}",
        f"classifier accuracy on held-out {record.dataset}: {_number(record.classifier_accuracy)}",
    ]
    if "label_accuracy" in record.details:
        rows.append(f"generated images of the requested class: {_number(record.details['label_accuracy'])}")
    if "reconstruction_fid" in record.details:
        details = record.details
        rows.append(
            f"reconstructions of held-out images: FID {_number(details['reconstruction_fid'])}, mean abs "
            f"pixel error {_number(details['reconstruction_mean_abs_error'])}, class kept "
            f"{_number(details.get('reconstruction_class_agreement'))}"
        )
    return "\n".join(rows)


# --- metrics ---------------------------------------------------------------------------------------------


def frechet_distance(
    mean_a: np.ndarray, covariance_a: np.ndarray, mean_b: np.ndarray, covariance_b: np.ndarray
) -> float:
    """Fréchet distance between two Gaussians: |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^½ C_b C_a^½)^½)."""
    root_a = _sqrt_psd(covariance_a)
    middle = root_a @ covariance_b @ root_a
    cross_trace = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None))))
    mean_term = float(np.sum((mean_a - mean_b) ** 2))
    distance = mean_term + float(np.trace(covariance_a) + np.trace(covariance_b)) - 2.0 * cross_trace
    return max(distance, 0.0)  # rounding can push identical fits a hair below zero


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of `features` [N, D]; needs N >= 2."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f"need at least 2 feature vectors [N, D] to fit a Gaussian, got shape {features.shape}"
        )
    values = features.astype(np.float64)
    return values.mean(axis=0), np.cov(values, rowvar=False)


def feature_frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets."""
    return frechet_distance(*gaussian_fit(features_a), *gaussian_fit(features_b))


def inception_score(probabilities: np.ndarray) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) for class probabilities [N, K]; between 1 and K."""
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(f"need class probabilities [N, K] with N >= 1, got shape {probabilities.shape}")
    conditional = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    marginal = conditional.mean(axis=0, keepdims=True)
    divergence = np.sum(conditional * (np.log(conditional) - np.log(marginal)), axis=1)
    return float(np.exp(np.mean(divergence)))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigen-decomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


def _features_distance(a: _Predictions, b: _Predictions) -> float:
    return feature_frechet_distance(a.features, b.features)


def _class_fractions(probabilities: np.ndarray) -> list[float]:
    counts = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1])
    return [round(float(count) / len(probabilities), 4) for count in counts]


# --- the classifier --------------------------------------------------------------------------------------


def build_classifier(image_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A small CNN; the `features` layer (128-d) is the feature extractor, the output is logits."""
    inputs = keras.Input(shape=image_shape, name="images")
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    while x.shape[1] > 8:  # larger images: keep shrinking so the dense layer stays small
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(128, activation="relu", name=FEATURE_LAYER)(x)
    dropped = keras.layers.Dropout(0.3)(features)
    logits = keras.layers.Dense(num_classes, name="logits")(dropped)
    return keras.Model(inputs, logits, name="evaluation_classifier")


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
    _save_atomic(classifier, path)
    return classifier, path


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
    classifier = build_classifier(train.image_shape, len(train.class_names))
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = int(np.clip(np.ceil(_TARGET_TRAINING_EXAMPLES / len(train)), _MIN_EPOCHS, _MAX_EPOCHS))
    logger.info(
        "training the evaluation classifier on %d %s images for %d epochs", len(train), train.name, epochs
    )
    batches = make_tf_dataset(
        train, _CLASSIFIER_BATCH_SIZE, seed=seed, with_labels=True, drop_remainder=False
    )
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


def _save_atomic(classifier: keras.Model, path: Path) -> None:
    """Save through a temporary file and a rename, so a concurrent reader never loads half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        classifier.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _predict(classifier: keras.Model, images: np.ndarray, batch_size: int) -> _Predictions:
    extractor = keras.Model(
        classifier.inputs, [classifier.get_layer(FEATURE_LAYER).output, classifier.outputs[0]]
    )
    features, logits = extractor.predict(images, batch_size=batch_size, verbose=0)
    probabilities = tf.nn.softmax(logits.astype(np.float64), axis=-1).numpy()
    return _Predictions(features.astype(np.float64), probabilities)


def _take(predictions: _Predictions, indices: np.ndarray) -> _Predictions:
    return _Predictions(predictions.features[indices], predictions.probabilities[indices])


def _subset(total: int, count: int, rng: np.random.RandomState) -> np.ndarray:
    """Up to `count` distinct indices out of `total`, random so class-sorted data is sampled evenly."""
    return np.sort(rng.permutation(total)[:count])


# --- generated images ------------------------------------------------------------------------------------


def generate_images(
    version_dir: Path, num_samples: int, *, seed: int = 0, batch_size: int = 250
) -> np.ndarray:
    """`num_samples` uint8 images from a version's SavedModel, from latents drawn with `seed`.

    Conditional models get class labels cycling through every class, so each class is equally represented.
    """
    loaded = tf.saved_model.load(str(version_dir))
    return _generate(loaded, read_metadata(version_dir), num_samples, seed=seed, batch_size=batch_size)


def _generate(
    loaded: Any, metadata: ModelMetadata, num_samples: int, *, seed: int, batch_size: int
) -> np.ndarray:
    signature = loaded.signatures[SIGNATURE_NAME]
    latents = np.random.RandomState(seed).randn(num_samples, metadata.latent_dim).astype(np.float32)
    needs_labels = LABEL_INPUT in signature.structured_input_signature[1]
    num_classes = len(metadata.class_names or [])
    if needs_labels and num_classes == 0:
        raise ValueError(f"{metadata.name} takes class labels but its metadata lists no class_names")
    labels = generated_labels(num_samples, max(num_classes, 1))
    logger.info("generating %d images from %s", num_samples, metadata.name)

    def generate(rows: slice) -> np.ndarray:
        inputs = {LATENT_INPUT: tf.constant(latents[rows])}
        if needs_labels:
            inputs[LABEL_INPUT] = tf.constant(labels[rows])
        return np.asarray(signature(**inputs)[IMAGES_OUTPUT].numpy())

    return _in_batches(num_samples, batch_size, generate)


def _reconstruct(loaded: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """A VAE's reconstructions of uint8 `images`: each encoded to its posterior mean and decoded."""
    encode, decode = loaded.signatures[ENCODE_SIGNATURE], loaded.signatures[SIGNATURE_NAME]

    def reconstruct(rows: slice) -> np.ndarray:
        latents = encode(**{IMAGES_INPUT: tf.constant(images[rows])})[LATENT_MEAN_OUTPUT]
        return np.asarray(decode(**{LATENT_INPUT: latents})[IMAGES_OUTPUT].numpy())

    return _in_batches(len(images), batch_size, reconstruct)


def _in_batches(count: int, batch_size: int, run: Callable[[slice], np.ndarray]) -> np.ndarray:
    """`run` over rows [0, count) in slices of `batch_size`, outputs concatenated."""
    return np.concatenate([run(slice(start, start + batch_size)) for start in range(0, count, batch_size)])


def _reconstruction_details(
    loaded: Any,
    classifier: keras.Model,
    held_out: ImageDataset,
    subset: np.ndarray,
    reference: _Predictions,
    batch_size: int,
) -> dict[str, float]:
    """How faithfully a VAE reconstructs held-out images: pixel error, class kept, Fréchet distance."""
    originals = to_uint8(held_out.images[subset])
    reconstructed = _reconstruct(loaded, originals, batch_size)
    predicted = _predict(classifier, _to_unit_range(reconstructed), batch_size)
    error = np.abs(reconstructed.astype(np.float64) - originals.astype(np.float64)).mean()
    details = {
        "reconstruction_mean_abs_error": float(error),
        "reconstruction_fid": _features_distance(predicted, reference),
    }
    if held_out.labels is not None:
        kept = predicted.probabilities.argmax(axis=1) == held_out.labels[subset]
        details["reconstruction_class_agreement"] = float(np.mean(kept))
    logger.info("reconstructions of held-out images: %s", details)
    return details


def generated_labels(num_samples: int, num_classes: int) -> np.ndarray:
    """The class asked of each generated image of a conditional model: 0, 1, ..., K-1, 0, 1, ..."""
    return (np.arange(num_samples) % num_classes).astype(np.int32)


def _to_unit_range(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


# --- checks ----------------------------------------------------------------------------------------------


def _check_inputs(train: ImageDataset, held_out: ImageDataset, num_samples: int, batch_size: int) -> None:
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 to fit feature statistics, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for dataset in (train, held_out):
        if dataset.labels is None or dataset.class_names is None:
            raise ValueError(
                f"evaluation needs a labelled dataset, and {dataset.name!r} has no labels: "
                "use mnist, fashion_mnist, shapes, or a folder with one subfolder per class"
            )
        if len(dataset) < 2:
            raise ValueError(
                f"dataset {dataset.name!r} has {len(dataset)} images: evaluation needs at least 2"
            )
    if train.image_shape != held_out.image_shape or train.class_names != held_out.class_names:
        raise ValueError(
            "train and held-out datasets must share image shape and classes: load both the same way"
        )


def _check_shape(made: tuple[int, ...], train: ImageDataset) -> None:
    if made != train.image_shape:
        raise ValueError(
            f"the model makes images of shape {made} but the dataset has {train.image_shape}: "
            "load the dataset with the model's image_size and channels"
        )


def _check_classes(metadata: ModelMetadata, train: ImageDataset) -> None:
    if metadata.conditional and metadata.class_names != train.class_names:
        raise ValueError(
            f"the model's classes {metadata.class_names} differ from the dataset's {train.class_names}: "
            "evaluate a conditional model on the dataset it was trained on"
        )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
