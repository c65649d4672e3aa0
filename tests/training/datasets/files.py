"""Dataset files in the real formats, written for the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image


def digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random 28x28 uint8 "digits" and labels; the first image holds both 0 and 255."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, size=(count, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # pin the extremes so the scaling is checkable
    return images, rng.randint(0, 10, size=count).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def save_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
