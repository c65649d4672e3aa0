"""`load_dataset`: check the options, parse the spec and hand it to the reader of its kind."""

from __future__ import annotations

from pathlib import Path

from genserve.conventions import check_channels
from training.audio.data import AUDIO_PREFIX, SPOKEN_DIGITS, is_sound_spec
from training.audio.spectrogram import BINS, FRAMES
from training.datasets.core import DatasetNotFoundError, ImageDataset, Split
from training.datasets.folder import load_folder
from training.datasets.mnist import CLASS_NAMES, read_mnist_like
from training.datasets.npz import read_generic_npz
from training.datasets.pixels import convert_channels, finish_dataset
from training.datasets.shapes import SHAPE_NAMES, SHAPES_NATIVE_SIZE, load_shapes
from training.datasets.sounds import load_sound_dataset

DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "fashion_mnist",
    "shapes",
    "folder:PATH",
    "npz:PATH",
    "spoken-digits",
    "audio:PATH",
)


def load_dataset(
    spec: str,
    *,
    data_path: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    split: Split = "train",
    seed: int = 0,
) -> ImageDataset:
    """Load the dataset named by `spec` (see `DATASET_NAMES`), resized and converted as asked.

    Sound (``spoken-digits``, ``audio:PATH``) loads as its spectrogram images (`training.datasets.sounds`), whose
    size is fixed: `image_size` and `channels` may only restate it.
    """
    _check_options(image_size, channels, limit, split)
    kind, spec_path = _parse_spec(spec)
    path = _resolve_path(kind, spec_path, data_path)
    if is_sound_spec(spec):
        _check_sound_options(spec, image_size, channels)
        folder = _require_path(path, spec) if kind == AUDIO_PREFIX else None
        return load_sound_dataset(spec, path=folder, limit=limit, split=split)
    if kind == "shapes":
        size = image_size or SHAPES_NATIVE_SIZE
        images, labels = load_shapes(split, size, seed, limit)
        return ImageDataset(spec, convert_channels(images, channels or 3), labels, list(SHAPE_NAMES))
    if kind == "folder":
        return load_folder(spec, _require_path(path, spec), image_size, channels, limit, split)
    if kind == "npz":
        npz_images, npz_labels = read_generic_npz(_require_path(path, spec), split)
        return finish_dataset(spec, npz_images, npz_labels, None, image_size, channels, limit)
    images, labels = read_mnist_like(kind, path, split)
    return finish_dataset(spec, images, labels, list(CLASS_NAMES[kind]), image_size, channels, limit)


def _check_options(image_size: int | None, channels: int | None, limit: int | None, split: str) -> None:
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    if channels is not None:
        check_channels(channels)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None for every example), got {limit}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _check_sound_options(spec: str, image_size: int | None, channels: int | None) -> None:
    if image_size not in (None, FRAMES) or channels not in (None, 1):
        raise ValueError(
            f"{spec!r} trains on {FRAMES}x{BINS} one-channel spectrograms: drop --image-size and --channels"
        )


def _parse_spec(spec: str) -> tuple[str, str | None]:
    kind, colon, rest = spec.partition(":")
    if kind in ("mnist", "fashion_mnist", "shapes", SPOKEN_DIGITS) and not colon:
        return kind, None
    if kind in ("folder", "npz", AUDIO_PREFIX):
        return kind, rest or None
    raise ValueError(f"unknown dataset {spec!r}: choose one of {', '.join(DATASET_NAMES)}")


def _resolve_path(kind: str, spec_path: str | None, data_path: str | Path | None) -> Path | None:
    if kind in ("shapes", SPOKEN_DIGITS) and data_path is not None:
        raise ValueError(f"the {kind!r} dataset is generated, not read from disk: drop the data path")
    if spec_path is not None and data_path is not None:
        raise ValueError(f"two paths given for {kind!r}: put it in the spec ({kind}:PATH) or pass data_path")
    chosen = spec_path if spec_path is not None else data_path
    return Path(chosen).expanduser() if chosen is not None else None


def _require_path(path: Path | None, spec: str) -> Path:
    if path is None:
        raise ValueError(f"dataset {spec!r} needs a path: write it as {spec.split(':')[0]}:PATH")
    if not path.exists():
        raise DatasetNotFoundError(f"dataset path {str(path)!r} does not exist")
    return path
