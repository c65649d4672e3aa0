"""uint8 image batches as file bytes: PNG, PNG grids, GIF/WebP animations, .zip and .npy (blocking: off-loop)."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
from PIL import Image

from genserve.conventions import tile_images

# Black pixels around each tile of a served grid, so neighbouring images do not run into each other.
GRID_PADDING = 2


def to_pil(image: np.ndarray) -> Image.Image:
    """One HxWxC uint8 image as a Pillow image (grayscale for one channel)."""
    if image.shape[-1] == 1:
        return Image.fromarray(image[..., 0], mode="L")
    return Image.fromarray(image, mode="RGB")


def png_bytes(image: np.ndarray, level: int) -> bytes:
    """One image as a PNG compressed at zlib `level` (0-9: higher is smaller and slower)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def grid_png_bytes(images: np.ndarray, columns: int | None, level: int) -> bytes:
    """The images tiled row-major (near-square without `columns`) as one PNG."""
    return png_bytes(tile_images(images, columns, padding=GRID_PADDING), level)


def png_base64_list(images: np.ndarray, level: int) -> list[str]:
    return [base64.b64encode(png_bytes(image, level)).decode("ascii") for image in images]


def npy_bytes(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    return buffer.getvalue()


def zip_bytes(images: np.ndarray, names: list[str], level: int) -> bytes:
    """One PNG per image in an uncompressed archive (PNG is compressed already)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, image in zip(names, images, strict=True):
            archive.writestr(name, png_bytes(image, level))
    return buffer.getvalue()


def animation_bytes(frames: np.ndarray, fps: int, image_format: str) -> bytes:
    """An endlessly looping GIF or WebP (lossless) of the frames."""
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
