"""``folder:PATH``: every PNG, JPEG or WebP under a folder, centre-cropped square; subfolders are classes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from genserve.conventions import to_unit_range
from training.datasets.core import DatasetNotFoundError, ImageDataset, Split, held_out_mask
from training.datasets.pixels import convert_channels

logger = logging.getLogger(__name__)

FOLDER_DEFAULT_SIZE = 64
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp"})


def load_folder(
    spec: str, folder: Path, image_size: int | None, channels: int | None, limit: int | None, split: Split
) -> ImageDataset:
    """The readable images of `split` under `folder`, square at `image_size` (default 64) pixels."""
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {str(folder)!r} is not a directory")
    files = sorted(
        (file for file in folder.rglob("*") if file.suffix.lower() in IMAGE_EXTENSIONS and file.is_file()),
        key=lambda file: file.relative_to(folder).as_posix(),
    )
    class_names, all_labels = _folder_classes(folder, files)
    mask = held_out_mask(len(files), split)
    chosen = [file for file, keep in zip(files, mask, strict=True) if keep]
    chosen_labels = all_labels[mask] if all_labels is not None else None
    size = image_size or FOLDER_DEFAULT_SIZE
    pixels, kept = _decode_images(chosen, size, limit)
    if not pixels:
        raise ValueError(f"no readable PNG, JPEG or WebP images in folder {str(folder)!r}")
    images = to_unit_range(np.stack(pixels))
    labels = chosen_labels[kept] if chosen_labels is not None else None
    return ImageDataset(spec, convert_channels(images, channels or 3), labels, class_names)


def _folder_classes(folder: Path, files: list[Path]) -> tuple[list[str] | None, np.ndarray | None]:
    """Top-level subfolders as classes, when every image sits in one and there are at least two."""
    parts = [file.relative_to(folder).parts for file in files]
    if not parts or any(len(part) < 2 for part in parts):
        return None, None
    names = sorted({part[0] for part in parts})
    if len(names) < 2:
        return None, None
    index = {name: position for position, name in enumerate(names)}
    return names, np.array([index[part[0]] for part in parts], dtype=np.int64)


def _decode_images(
    files: list[Path], image_size: int, limit: int | None
) -> tuple[list[np.ndarray], list[int]]:
    """Decode up to `limit` readable files; return their pixels and their positions in `files`."""
    pixels: list[np.ndarray] = []
    kept: list[int] = []
    for position, file in enumerate(files):
        if limit is not None and len(pixels) >= limit:
            break
        image = _read_square_rgb(file, image_size)
        if image is not None:
            pixels.append(image)
            kept.append(position)
    return pixels, kept


def _read_square_rgb(file: Path, image_size: int) -> np.ndarray | None:
    try:
        with Image.open(file) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        logger.warning("skipping unreadable image %s: %s", file, error)
        return None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    resized = square.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)
