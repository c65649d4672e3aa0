"""Encoding uint8 image batches into PNG grids, animations, archives and arrays (blocking: run off-loop)."""

from __future__ import annotations

import base64
import io
import math
import zipfile

import numpy as np
from PIL import Image

GRID_PADDING = 2


def to_pil(image: np.ndarray) -> Image.Image:
    """One HxWxC uint8 image as a Pillow image (grayscale for one channel)."""
    if image.shape[-1] == 1:
        return Image.fromarray(image[..., 0], mode="L")
    return Image.fromarray(image, mode="RGB")


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def default_columns(count: int) -> int:
    return max(1, math.ceil(math.sqrt(count)))


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = GRID_PADDING) -> np.ndarray:
    """Tile [N, H, W, C] images row-major into one image with `padding` black pixels around each tile."""
    count, height, width, channels = images.shape
    columns = min(columns or default_columns(count), count)
    rows = math.ceil(count / columns)
    grid = np.zeros(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), dtype=np.uint8
    )
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def encode_grid_png(images: np.ndarray, columns: int | None = None) -> bytes:
    return encode_png(make_grid(images, columns))


def encode_png_list_base64(images: np.ndarray) -> list[str]:
    return [base64.b64encode(encode_png(image)).decode("ascii") for image in images]


def encode_npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    return buffer.getvalue()


def encode_zip(images: np.ndarray, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, image in zip(names, images, strict=True):
            archive.writestr(name, encode_png(image))
    return buffer.getvalue()


def encode_animation(frames: np.ndarray, fps: int, image_format: str) -> bytes:
    """An endlessly looping GIF or WebP of the frames."""
    pil_frames = [to_pil(frame) for frame in frames]
    buffer = io.BytesIO()
    options: dict[str, object] = {"save_all": True, "append_images": pil_frames[1:], "loop": 0}
    options["duration"] = max(1, round(1000 / fps))
    if image_format == "WEBP":
        options["lossless"] = True
    else:
        options["disposal"] = 1
    pil_frames[0].save(buffer, format=image_format, **options)
    return buffer.getvalue()
