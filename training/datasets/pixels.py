"""Raw pixel arrays to an `ImageDataset`: scaled to [-1, 1], with a channel axis, resized, 1 or 3 channels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from genserve.conventions import PIXEL_MAX, SUPPORTED_CHANNELS, check_channels, to_unit_range
from training.datasets.core import ImageDataset

# Images resized per tf.image.resize call: bounds the float32 copy it makes.
_RESIZE_CHUNK = 4096
# ITU-R BT.601 luma weights for RGB to grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def finish_dataset(
    spec: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    class_names: list[str] | None,
    image_size: int | None,
    channels: int | None,
    limit: int | None,
) -> ImageDataset:
    """Apply `limit`, scale to [-1, 1], resize and convert channels."""
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{spec!r} has {len(images)} images but {len(labels)} labels: they must match")
    if limit is not None:
        images, labels = images[:limit], (labels[:limit] if labels is not None else None)
    scaled = _ensure_channel_axis(_scale_to_unit_range(images, spec))
    if image_size is not None:
        scaled = _resize(scaled, image_size)
    scaled = convert_channels(scaled, channels or scaled.shape[-1])
    label_array = labels.astype(np.int64) if labels is not None else None
    return ImageDataset(spec, scaled, label_array, class_names)


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """[-1, 1] images with `channels` channels: grayscale repeated to RGB, or RGB to luma."""
    current = check_channels(images.shape[-1])
    if current == check_channels(channels):
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    # Luma weights sum to one, so a [-1, 1] input stays in [-1, 1].
    return (images @ _LUMA)[..., np.newaxis].astype(np.float32)


def _scale_to_unit_range(images: np.ndarray, spec: str) -> np.ndarray:
    """Scale integer [0, 255] or float [0, 1] / [-1, 1] / [0, 255] pixels to float32 [-1, 1]."""
    if images.size == 0:
        raise ValueError(f"{spec!r} holds no images")
    low, high = float(images.min()), float(images.max())
    if np.issubdtype(images.dtype, np.integer) or high > 1.0:
        if low < 0 or high > PIXEL_MAX:
            raise ValueError(f"{spec!r} pixels span [{low}, {high}]: expected [0, 255], [0, 1] or [-1, 1]")
        return to_unit_range(images)
    if low >= 0.0:
        return (images.astype(np.float32) * 2.0 - 1.0).astype(np.float32)
    if low >= -1.0:
        return images.astype(np.float32)
    raise ValueError(f"{spec!r} pixels span [{low}, {high}]: expected [0, 255], [0, 1] or [-1, 1]")


def _ensure_channel_axis(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images[..., np.newaxis]
    if images.ndim == 4 and images.shape[-1] in SUPPORTED_CHANNELS:
        return images
    raise ValueError(f"images must be [N, H, W] or [N, H, W, C] with C 1 or 3, got shape {images.shape}")


def _resize(images: np.ndarray, image_size: int) -> np.ndarray:
    if images.shape[1:3] == (image_size, image_size):
        return images
    target = (image_size, image_size)
    chunks = [
        tf.image.resize(images[start : start + _RESIZE_CHUNK], target, antialias=True).numpy()
        for start in range(0, len(images), _RESIZE_CHUNK)
    ]
    return np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32)
