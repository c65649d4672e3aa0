"""Images from a published version's SavedModel: samples from seeded latents, and a VAE's reconstructions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from genserve.conventions import cycled_labels
from genserve.store import (
    AUDIO_OUTPUT,
    ENCODE_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_OUTPUT,
    LABEL_INPUT,
    LATENT_INPUT,
    LATENT_MEAN_OUTPUT,
    SIGNATURE_NAME,
    ModelMetadata,
)

logger = logging.getLogger(__name__)


def generate_images(
    loaded: Any, metadata: ModelMetadata, num_samples: int, *, seed: int, batch_size: int
) -> np.ndarray:
    """`num_samples` uint8 images from a loaded SavedModel, from latents drawn with `seed`.

    Conditional models get class labels cycling through every class, so each class is equally represented;
    a sound generator's answer is its clips, float32 ``[N, samples]``.
    """
    signature = loaded.signatures[SIGNATURE_NAME]
    latents = np.random.RandomState(seed).randn(num_samples, metadata.latent_dim).astype(np.float32)
    needs_labels = LABEL_INPUT in signature.structured_input_signature[1]
    num_classes = len(metadata.class_names or [])
    if needs_labels and num_classes == 0:
        raise ValueError(f"{metadata.name} takes class labels but its metadata lists no class_names")
    labels = cycled_labels(num_samples, max(num_classes, 1))
    output = AUDIO_OUTPUT if metadata.is_audio else IMAGES_OUTPUT
    logger.info(
        "generating %d %s from %s", num_samples, "clips" if metadata.is_audio else "images", metadata.name
    )

    def generate(rows: slice) -> np.ndarray:
        inputs = {LATENT_INPUT: tf.constant(latents[rows])}
        if needs_labels:
            inputs[LABEL_INPUT] = tf.constant(labels[rows])
        return np.asarray(signature(**inputs)[output].numpy())

    return _in_batches(num_samples, batch_size, generate)


def reconstruct_images(loaded: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """A VAE's reconstructions of uint8 `images`: each encoded to its posterior mean and decoded."""
    encode, decode = loaded.signatures[ENCODE_SIGNATURE], loaded.signatures[SIGNATURE_NAME]

    def reconstruct(rows: slice) -> np.ndarray:
        latents = encode(**{IMAGES_INPUT: tf.constant(images[rows])})[LATENT_MEAN_OUTPUT]
        return np.asarray(decode(**{LATENT_INPUT: latents})[IMAGES_OUTPUT].numpy())

    return _in_batches(len(images), batch_size, reconstruct)


def _in_batches(count: int, batch_size: int, run: Callable[[slice], np.ndarray]) -> np.ndarray:
    """`run` over rows [0, count) in slices of `batch_size`, outputs concatenated."""
    return np.concatenate([run(slice(start, start + batch_size)) for start in range(0, count, batch_size)])
