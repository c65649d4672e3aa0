"""Sample-quality numbers for a published version: Fréchet distance and the class score (Inception-style).

Both use a small CNN classifier trained on the dataset's own labels (`training.classifier`) instead of an
ImageNet Inception network: its penultimate layer gives the features for the Fréchet distance and its
softmax gives p(y|x) for the score (`training.fid`), which the store's evaluation.json keeps as
`inception_score`. The numbers are comparable between versions evaluated on the same dataset, not with
published FID or Inception Score values. A reference row computed from real held-out images shows what "as
good as real data" looks like at the same sample count. Conditional models are asked for every class in turn,
and the share of their images the classifier puts in the class asked for is their label accuracy. A GAN's
version can also be scored at other latent scales (`sweep_latent_scales`), to pick the one to publish with
``python -m training export --latent-scale``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from genserve.console import quieted
from genserve.conventions import cycled_labels, to_uint8, to_unit_range
from genserve.store import (
    EvaluationRecord,
    ModelMetadata,
    check_latent_scale,
    read_metadata,
)
from training.classifier import (
    LABEL_ACCURACY,
    Predictions,
    load_or_train_classifier,
    predict,
    sample_scores,
)
from training.datasets import ImageDataset, default_cache_dir, load_dataset
from training.datasets.sounds import SpectrogramDataset, spectrogram_images
from training.fid import DEFAULT_NUM_SAMPLES, feature_frechet_distance
from training.metadata import generated_shape
from training.sampling import generate_images, reconstruct_images
from training.serving_graph import LATENT_SCALE_VARIABLE

logger = logging.getLogger(__name__)

# Where a conditional version's evaluation records each class's share of samples classified as asked.
LABEL_ACCURACY_BY_CLASS = "label_accuracy_by_class"
# Images per SavedModel or classifier call: bounds memory, does not change the numbers.
DEFAULT_BATCH_SIZE = 250
# What a run trained with `--latent-scale auto` tries before it publishes (the bundled GANs chose 0.85-1.3:
# narrower than trained for a mode-seeking conditional generator, wider for the others).
AUTO_LATENT_SCALES = (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4)


def pick_latent_scale(
    publish: Callable[[Path], Path],
    *,
    dataset: str,
    data_path: str | None,
    num_samples: int,
    seed: int,
    scales: Sequence[float] = AUTO_LATENT_SCALES,
) -> float:
    """The scale in `scales` with the lowest FID, scored on the version `publish(store)` writes to a trial store.

    The trial version is what would be published at scale 1, so each row measures exactly what that scale
    would serve; the trial store is removed afterwards.
    """
    logger.info("scoring latent scales %s at N=%d (seed %d)", ", ".join(map(str, scales)), num_samples, seed)
    with tempfile.TemporaryDirectory(prefix="genserve-latent-scales-") as folder:
        with quieted(("training.export",)):  # "published" would name a folder about to be removed
            trial = publish(Path(folder))
        train, held_out = datasets_for(read_metadata(trial), dataset, data_path, seed)
        records = sweep_latent_scales(
            trial, list(scales), train=train, held_out=held_out, num_samples=num_samples, seed=seed
        )
    best = min(zip(scales, records, strict=True), key=lambda pair: pair[1].fid)[0]
    logger.info("publishing at latent scale %g", best)
    return best


def datasets_for(
    metadata: ModelMetadata, dataset: str, data_path: str | None, seed: int
) -> tuple[ImageDataset, ImageDataset]:
    """The train and held-out splits of `dataset` at the model's image size and channels (a sound generator's
    dataset as its spectrogram images)."""
    if metadata.is_audio:
        return load_dataset(dataset, split="train", data_path=data_path), load_dataset(
            dataset, split="test", data_path=data_path
        )
    height, width, channels = metadata.image_shape
    if height != width:
        raise ValueError(f"evaluation needs square images, the model makes {height}x{width}")
    options: dict[str, Any] = {
        "data_path": data_path,
        "image_size": height,
        "channels": channels,
        "seed": seed,
    }
    return load_dataset(dataset, split="train", **options), load_dataset(dataset, split="test", **options)


def sweep_latent_scales(
    version_dir: Path,
    scales: list[float],
    *,
    train: ImageDataset,
    held_out: ImageDataset,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    cache_dir: Path | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[EvaluationRecord]:
    """The version's `evaluate_version` record at each latent scale in turn, as if published with it.

    GAN generators often serve better samples a little off the N(0, I) they were trained with: most cover less
    than the data's spread, and latents scaled by 1.05-1.3 win some of it back, while one trained with the
    mode-seeking term spreads wider and does better below 1. The lowest FID here
    says which `--latent-scale` to publish with; pass a `seed` other than the one the version is judged on.
    The classifier, the real images' predictions and the SavedModel are loaded once; each scale only sets the
    model's scale variable and scores new samples.
    """
    if not scales:
        raise ValueError("give at least one latent scale to try")
    metadata = _checked_metadata(version_dir, train, held_out, num_samples, batch_size)
    for scale in scales:
        check_latent_scale(scale, metadata.kind)
    reference = _Reference.of(train, held_out, num_samples, cache_dir, seed, batch_size)
    loaded = tf.saved_model.load(str(version_dir))
    variable = getattr(loaded, LATENT_SCALE_VARIABLE, None)
    if variable is None:
        raise ValueError(
            f"{metadata.name} was published before latent scales existed: export its checkpoint again to "
            "try other scales"
        )
    records = []
    for scale in scales:
        started = time.monotonic()
        variable.assign(scale)
        scaled = metadata.model_copy(update={"latent_scale": scale})
        with quieted(("training.sampling",)):
            records.append(_score(loaded, scaled, reference, train, held_out, seed, batch_size, started))
        logger.info(
            "latent scale %g: FID %.3f, class score %.3f", scale, records[-1].fid, records[-1].inception_score
        )
    return records


def evaluate_version(
    version_dir: Path,
    *,
    train: ImageDataset,
    held_out: ImageDataset,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    cache_dir: Path | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EvaluationRecord:
    """Score `num_samples` generated images against `train`, with held-out real images as reference."""
    started = time.monotonic()
    metadata = _checked_metadata(version_dir, train, held_out, num_samples, batch_size)
    reference = _Reference.of(train, held_out, num_samples, cache_dir, seed, batch_size)
    logger.info("classifier accuracy on held-out images: %.4f", reference.accuracy)
    loaded = tf.saved_model.load(str(version_dir))
    record = _score(loaded, metadata, reference, train, held_out, seed, batch_size, started)
    if LABEL_ACCURACY in record.details:
        logger.info(
            "generated images classified as their requested class: %.4f", record.details[LABEL_ACCURACY]
        )
    return record


@dataclass(frozen=True)
class _Reference:
    """What scoring needs that no model changes: the classifier and its predictions on real images."""

    classifier: keras.Model
    classifier_name: str
    num_samples: int
    reference: Predictions  # `num_samples` training images: what generated images are compared with
    real: Predictions  # `num_samples` held-out images: the same comparison for real data
    accuracy: float  # the classifier's on every held-out image
    reconstruction_rows: np.ndarray  # the held-out images a VAE reconstructs

    @classmethod
    def of(
        cls,
        train: ImageDataset,
        held_out: ImageDataset,
        num_samples: int,
        cache_dir: Path | None,
        seed: int,
        batch_size: int,
    ) -> _Reference:
        classifier, path = load_or_train_classifier(train, cache_dir or default_cache_dir(), seed=seed)
        rng = np.random.RandomState(seed)
        reference = predict(classifier, train.images[_subset(len(train), num_samples, rng)], batch_size)
        held_out_all = predict(classifier, held_out.images, batch_size)
        return cls(
            classifier=classifier,
            classifier_name=path.name,
            num_samples=num_samples,
            reference=reference,
            real=held_out_all.take(_subset(len(held_out), num_samples, rng)),
            accuracy=held_out_all.accuracy(_labels_of(held_out)),
            reconstruction_rows=_subset(len(held_out), num_samples, rng),
        )


def _checked_metadata(
    version_dir: Path, train: ImageDataset, held_out: ImageDataset, num_samples: int, batch_size: int
) -> ModelMetadata:
    """The version's metadata, once the inputs and the version are known to fit together."""
    _check_inputs(train, held_out, num_samples, batch_size)
    metadata = read_metadata(version_dir)
    _check_shape(generated_shape(metadata), train)
    _check_classes(metadata, train)
    if metadata.is_audio and not isinstance(train, SpectrogramDataset):
        raise ValueError(f"{metadata.name!r} makes sound: evaluate it on sound (spoken-digits or audio:PATH)")
    return metadata


def _pictures(generated: np.ndarray, metadata: ModelMetadata, train: ImageDataset) -> np.ndarray:
    """Generated samples as the classifier's float [-1, 1] inputs: images rescaled, or clips as spectrograms
    made as the training clips' were (so a sound is judged by what it sounds like, Griffin-Lim included)."""
    if metadata.is_audio and isinstance(train, SpectrogramDataset):
        return spectrogram_images(generated, train.normaliser)
    return to_unit_range(generated)


def _score(
    loaded: Any,
    metadata: ModelMetadata,
    reference: _Reference,
    train: ImageDataset,
    held_out: ImageDataset,
    seed: int,
    batch_size: int,
    started: float,
) -> EvaluationRecord:
    """The record of a loaded version whose `metadata` says how it samples, against `reference`."""
    num_samples, classifier = reference.num_samples, reference.classifier
    samples = generate_images(loaded, metadata, num_samples, seed=seed, batch_size=batch_size)
    pictures = _pictures(samples, metadata, train)
    _check_shape(tuple(pictures.shape[1:]), train)  # the metadata could disagree with the graph
    generated = predict(classifier, pictures, batch_size)
    requested = cycled_labels(num_samples, len(metadata.class_names or [])) if metadata.conditional else None
    scores = sample_scores(generated, reference.reference, requested)
    details: dict[str, Any] = {}
    if LABEL_ACCURACY in scores and requested is not None:
        details[LABEL_ACCURACY] = scores[LABEL_ACCURACY]
        details[LABEL_ACCURACY_BY_CLASS] = _accuracy_by_class(generated, requested)
    if metadata.has_encoder:
        details.update(
            _reconstruction_details(
                loaded, classifier, held_out, reference.reconstruction_rows, reference.reference, batch_size
            )
        )
    real = reference.real
    real_scores = sample_scores(real, reference.reference)
    return EvaluationRecord(
        dataset=train.name,
        num_samples=num_samples,
        fid=scores["fid"],
        inception_score=scores["class_score"],
        real_fid=real_scores["fid"],
        real_inception_score=real_scores["class_score"],
        classifier_accuracy=reference.accuracy,
        details={
            "real_num_samples": len(real.features),
            "reference_num_samples": len(reference.reference.features),
            "feature_dim": int(reference.reference.features.shape[1]),
            "num_classes": int(reference.reference.probabilities.shape[1]),
            "generated_class_fractions": _class_fractions(generated.probabilities),
            "classifier": reference.classifier_name,
            "seed": seed,
            "latent_scale": metadata.latent_scale,
            "seconds": round(time.monotonic() - started, 1),
            **details,
        },
    )


def _accuracy_by_class(predictions: Predictions, requested: np.ndarray) -> list[float]:
    """For each class, the share of the samples asked for it that the classifier puts in it."""
    predicted = predictions.probabilities.argmax(axis=1)
    return [
        round(float(np.mean(predicted[requested == label] == label)), 4)
        if np.any(requested == label)
        else 0.0
        for label in range(predictions.probabilities.shape[1])
    ]


def _class_fractions(probabilities: np.ndarray) -> list[float]:
    counts = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1])
    return [round(float(count) / len(probabilities), 4) for count in counts]


def _subset(total: int, count: int, rng: np.random.RandomState) -> np.ndarray:
    """Up to `count` distinct indices out of `total`, random so class-sorted data is sampled evenly."""
    return np.sort(rng.permutation(total)[:count])


def _reconstruction_details(
    loaded: Any,
    classifier: keras.Model,
    held_out: ImageDataset,
    subset: np.ndarray,
    reference: Predictions,
    batch_size: int,
) -> dict[str, float]:
    """How faithfully a VAE reconstructs held-out images: pixel error, class kept, Fréchet distance."""
    originals = to_uint8(held_out.images[subset])
    reconstructed = reconstruct_images(loaded, originals, batch_size)
    predicted = predict(classifier, to_unit_range(reconstructed), batch_size)
    error = np.abs(reconstructed.astype(np.float64) - originals.astype(np.float64)).mean()
    details = {
        "reconstruction_mean_abs_error": float(error),
        "reconstruction_fid": feature_frechet_distance(predicted.features, reference.features),
    }
    if held_out.labels is not None:
        kept = predicted.probabilities.argmax(axis=1) == held_out.labels[subset]
        details["reconstruction_class_agreement"] = float(np.mean(kept))
    logger.info("reconstructions of held-out images: %s", details)
    return details


# --- checks ----------------------------------------------------------------------------------------------


def _labels_of(dataset: ImageDataset) -> np.ndarray:
    if dataset.labels is None or dataset.class_names is None:
        raise ValueError(
            f"evaluation needs a labelled dataset, and {dataset.name!r} has no labels: "
            "use mnist, fashion_mnist, shapes, or a folder with one subfolder per class"
        )
    return dataset.labels


def _check_inputs(train: ImageDataset, held_out: ImageDataset, num_samples: int, batch_size: int) -> None:
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 to fit feature statistics, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for dataset in (train, held_out):
        _labels_of(dataset)
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
