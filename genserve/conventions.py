"""Conventions the trainer and the service must agree on, written once (NumPy only, no TensorFlow).

- a seed names one latent vector: ``np.random.RandomState(seed).randn(latent_dim)``;
- pixels travel as uint8 ``[0, 255]``, models see float ``[-1, 1]``;
- images have 1 (grayscale) or 3 (RGB) channels;
- without a requested class, image ``i`` of a conditional model gets class ``i % num_classes``;
- a batch of images is shown as a row-major grid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_SEED = 2**32 - 1
PIXEL_MAX = 255
_HALF_RANGE = PIXEL_MAX / 2
SUPPORTED_CHANNELS = (1, 3)


def latents_from_seeds(
    seeds: list[int] | range, latent_dim: int, generator: np.random.RandomState | None = None
) -> np.ndarray:
    """One standard-normal float32 vector per seed, so an image depends only on its own seed.

    Equal to `np.random.RandomState(seed).randn(latent_dim)`; re-seeding one `generator` gives the same
    numbers far faster than building a generator per seed. A generator must not be shared across threads.
    """
    generator = generator or np.random.RandomState()
    rows = np.empty((len(seeds), latent_dim), dtype=np.float64)
    for row, seed in enumerate(seeds):
        generator.seed(seed)
        rows[row] = generator.randn(latent_dim)
    return rows.astype(np.float32)


def cycled_labels(count: int, num_classes: int) -> np.ndarray:
    """The class of each of `count` images when none was asked for: 0, 1, ..., K-1, 0, 1, ... (int32)."""
    return (np.arange(count) % num_classes).astype(np.int32)


def pixels_to_unit(pixels: Any) -> Any:
    """uint8-valued pixels ``[0, 255]`` as floats in ``[-1, 1]`` (NumPy arrays or TensorFlow tensors)."""
    return pixels / _HALF_RANGE - 1.0


def unit_to_pixel_values(images: Any) -> Any:
    """Floats in ``[-1, 1]`` on the ``[0, 255]`` scale, not yet rounded or clipped (arrays or tensors)."""
    return (images + 1.0) * _HALF_RANGE


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in ``[-1, 1]``."""
    return pixels_to_unit(np.asarray(pixels, dtype=np.float32)).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Floats in ``[-1, 1]`` as uint8 ``[0, 255]``, rounding and clipping."""
    values = unit_to_pixel_values(np.asarray(images, dtype=np.float32))
    return np.clip(np.round(values), 0, PIXEL_MAX).astype(np.uint8)


def check_channels(channels: int) -> int:
    """`channels` if it is 1 or 3, else a ValueError that says how to fix it."""
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels, got {channels}: convert them")
    return channels


def default_columns(count: int) -> int:
    """Columns of a near-square grid of `count` images."""
    return max(1, math.ceil(math.sqrt(count)))


def tile_images(images: np.ndarray, columns: int | None = None, padding: int = 0) -> np.ndarray:
    """Tile uint8 ``[N, H, W, C]`` images row-major into one image, `padding` black pixels around each tile."""
    count, height, width, channels = images.shape
    columns = min(columns or default_columns(count), count)
    rows = math.ceil(count / columns)
    grid = np.zeros(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        dtype=images.dtype,
    )
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid
