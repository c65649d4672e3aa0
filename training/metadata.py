"""What a published version says of itself (genserve.json): its kind, shapes, classes, training config and
summary, and the framework versions that made it."""

from __future__ import annotations

import platform
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from genserve.store import AudioInfo, ModelKind, ModelMetadata
from training.datasets.sounds import SoundFormat
from training.provenance import dataset_location, portable_options
from training.run_info import RunInfo

# training_config key of a conditional run published unconditionally (class drawn from the latent).
CLASS_FROM_LATENT = "class_from_latent"
# training_config key of the classes' shares of the training images where they are not equal (pseudo-classes):
# an unconditionally published model draws each class that often.
CLASS_WEIGHTS = "class_weights"


def framework_versions() -> dict[str, str]:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def training_summary(
    history: list[dict[str, Any]],
    *,
    stopped_on_time_budget: bool = False,
    prior_fit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the training cost, from a run's per-epoch history: wall time, images seen and images/s.

    The wall time is the epochs' own (the periodic sample checks included), not start-up or export; a flow
    prior's fit (`prior_fit`: its epochs, seconds and final loss) is recorded beside it as ``latent_prior_fit``.
    """
    seconds = sum(float(entry.get("wall_seconds", 0.0)) for entry in history)
    images = sum(int(entry.get("images", 0)) for entry in history)
    return {
        "epochs_timed": len(history),
        "wall_seconds": round(seconds, 1),
        "images_seen": images,
        "images_per_second": round(images / seconds, 1) if seconds > 0 else 0.0,
        "stopped_on_time_budget": stopped_on_time_budget,
        **({"latent_prior_fit": prior_fit} if prior_fit is not None else {}),
    }


def build_metadata(
    info: RunInfo,
    *,
    epochs: int,
    averaged: bool,
    name: str | None = None,
    summary: dict[str, Any] | None = None,
    unconditional: bool = False,
    latent_scale: float = 1.0,
) -> ModelMetadata:
    """Store metadata for a model trained as `info` describes; dataset class names go in training_config.

    Conditional models also list the class names as their `class_names`, in label order; `summary`
    (`training_summary`) records what the training cost, and ``training_config["distribution"]`` how the batch
    was split over replicas. `unconditional` describes a conditional run published as a "dcgan" whose
    latents pick the class (``training_config["class_from_latent"]``); `latent_scale` is what the served graph
    multiplies the latents by (`ModelMetadata.latent_scale`).
    """
    config = info.config
    if unconditional and not config.conditional:
        raise ValueError(
            f"run {config.name!r} trained an unconditional {config.model!r}: it is published unconditionally as it "
            "is, only a conditional run needs unconditional=True"
        )
    conditional = config.conditional and not unconditional
    training_config = portable_options(config.to_dict(), dataset_location(config.dataset, config.data_path))
    training_config["dataset_class_names"] = info.dataset_class_names
    training_config["exported_generator"] = "ema" if averaged else "raw"
    if unconditional:
        training_config[CLASS_FROM_LATENT] = True
    # Whether the generator learned from the dataset's labels (a conditional run on its own classes).
    training_config["labels_used"] = config.conditional and not config.pseudo_classes
    if info.class_weights is not None:
        training_config[CLASS_WEIGHTS] = [round(float(w), 6) for w in info.class_weights]
    if info.distribution is not None:
        training_config["distribution"] = info.distribution
    sound = info.sound
    return ModelMetadata(
        name=name or config.name,
        kind=_kind(config.model, unconditional=unconditional, sound=sound is not None),
        latent_dim=config.latent_dim,
        latent_scale=latent_scale,
        image_shape=info.image_shape if sound is None else (0, 0, 0),
        channels=info.image_shape[2] if sound is None else 0,
        audio=_audio_info(sound, info.image_shape) if sound is not None else None,
        class_names=info.dataset_class_names if conditional else None,
        dataset=training_config["dataset"],
        training_config=training_config,
        epochs=epochs,
        seed=config.seed,
        framework_versions=framework_versions(),
        training_summary=summary or {},
    )


def generated_shape(metadata: ModelMetadata) -> tuple[int, ...]:
    """The shape of what a version's generator draws: its images, or a sound generator's one-channel
    spectrograms (what the export checks the generator against and the evaluation classifier sees)."""
    if metadata.audio is not None:
        return (*metadata.audio.spectrogram_shape, 1)
    return tuple(metadata.image_shape)


def _audio_info(sound: SoundFormat, image_shape: tuple[int, int, int]) -> AudioInfo:
    return AudioInfo(
        sample_rate=sound.sample_rate,
        samples=sound.samples,
        spectrogram_shape=(image_shape[0], image_shape[1]),
    )


def _kind(model: str, *, unconditional: bool, sound: bool) -> ModelKind:
    """A sound run's kind is "specgan" whatever its model; an image GAN published unconditionally is a "dcgan"."""
    if sound:
        return "specgan"
    if unconditional:
        return "dcgan"
    if model == "vae":
        return "vae"
    return "cdcgan" if model == "cdcgan" else "dcgan"
