"""Decoding what the service returns, for assertions on real pixels."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    if image.format != "PNG":
        raise AssertionError(f"expected PNG, got {image.format}")
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def decode_base64_png(text: str) -> np.ndarray:
    return decode_png(base64.b64decode(text))


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def frame_count(data: bytes) -> int:
    return int(getattr(Image.open(io.BytesIO(data)), "n_frames", 1))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
