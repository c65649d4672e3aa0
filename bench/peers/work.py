"""The work every peer does per request, written as a user would: seeds -> latents -> SavedModel -> PNG grid."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from app.image.formats import grid_png_bytes
from genserve import store
from genserve.conventions import latents_from_seeds

# A plain server saves its PNGs as Pillow does unless told otherwise (zlib level 6); genserve's own level is
# its GENSERVE_PNG_COMPRESS_LEVEL setting.
PLAIN_PNG_LEVEL = 6


def load_generator(store_path: Path, model: str) -> tuple[Any, int]:
    """The newest version's serving signature and its latent size."""
    import tensorflow as tf

    version = store.latest_version(store_path, model)
    if version is None:
        raise SystemExit(f"no complete version of {model!r} in {store_path}")
    folder = store.version_dir(store_path, model, version)
    metadata = store.read_metadata(folder)
    signature = tf.saved_model.load(str(folder)).signatures[store.SIGNATURE_NAME]
    return signature, metadata.latent_dim


def generate(signature: Any, latents: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return signature(**{store.LATENT_INPUT: tf.constant(latents)})[store.IMAGES_OUTPUT].numpy()


def latents_for(n: int, seed: int, latent_dim: int) -> np.ndarray:
    return latents_from_seeds(range(seed, seed + n), latent_dim)


def png_grid(images: np.ndarray) -> bytes:
    return grid_png_bytes(images, None, PLAIN_PNG_LEVEL)


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args()
