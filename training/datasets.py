"""Image datasets for training and evaluation: float32 ``[N, H, W, C]`` arrays scaled to [-1, 1].

Specs understood by `load_dataset`:

- ``mnist``, ``fashion_mnist``: downloaded by Keras, or read from ``data_path`` (a Keras-format ``.npz``
  or the folder holding the four IDX ``.gz`` files of the original distribution).
- ``shapes``: procedural coloured circles, squares and triangles; needs no files.
- ``folder:PATH``: every PNG/JPEG/WebP under PATH; top-level subfolders become classes.
- ``npz:PATH``: an ``.npz`` holding an image array and optionally labels.

Folders and npz files without a separate test array hold out every tenth example (indices 9, 19, 29, ...)
as the test split; the train split is the rest. Interleaving keeps every class in both splits even when
the examples are sorted by class. With fewer than ten examples both splits use all of them.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion_mnist", "shapes", "folder:PATH", "npz:PATH")

DIGIT_NAMES = [str(digit) for digit in range(10)]
FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SHAPE_NAMES = ["circle", "square", "triangle"]

SHAPES_TRAIN_COUNT = 2048
SHAPES_TEST_COUNT = 512
SHAPES_NATIVE_SIZE = 28
FOLDER_DEFAULT_SIZE = 64
HELD_OUT_EVERY = 10
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp"})

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UNSIGNED_BYTE = 0x08
_NPZ_IMAGE_KEYS = ("images", "x", "x_train")
_NPZ_LABEL_KEYS = ("labels", "y", "y_train")
_RESIZE_CHUNK = 4096
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset path that does not exist; also a ValueError so callers can treat it as bad input."""


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images scaled to [-1, 1], with optional integer labels and their names."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str] | None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.float32:
            shape, dtype = self.images.shape, self.images.dtype
            raise ValueError(f"images must be float32 [N, H, W, C], got {dtype} {shape}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {self.labels.shape}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        height, width, channels = (int(size) for size in self.images.shape[1:])
        return height, width, channels

    def __len__(self) -> int:
        return int(self.images.shape[0])


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
    """Load the dataset named by `spec` (see `DATASET_NAMES`), resized and converted as asked."""
    _check_options(image_size, channels, limit, split)
    kind, spec_path = _parse_spec(spec)
    path = _resolve_path(kind, spec_path, data_path)
    if kind == "shapes":
        size = image_size or SHAPES_NATIVE_SIZE
        images, labels = _load_shapes(split, size, seed, limit)
        return ImageDataset(spec, _convert_channels(images, channels or 3), labels, list(SHAPE_NAMES))
    if kind == "folder":
        return _load_folder(spec, _require_path(path, spec), image_size, channels, limit, split)
    if kind == "npz":
        npz_images, npz_labels = _read_generic_npz(_require_path(path, spec), split)
        return _finish(spec, npz_images, npz_labels, None, image_size, channels, limit)
    images, labels = _read_mnist_like(kind, path, split)
    names = DIGIT_NAMES if kind == "mnist" else FASHION_NAMES
    return _finish(spec, images, labels, list(names), image_size, channels, limit)


def make_tf_dataset(
    dataset: ImageDataset,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    with_labels: bool = False,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """Batches of images, or of (images, labels) when `with_labels`, reshuffled every epoch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if drop_remainder and batch_size > len(dataset):
        raise ValueError(
            f"batch_size {batch_size} is larger than dataset {dataset.name!r} ({len(dataset)} images), so no "
            "full batch exists: lower the batch size or pass drop_remainder=False"
        )
    if with_labels and dataset.labels is None:
        raise ValueError(
            f"dataset {dataset.name!r} has no labels: pass with_labels=False or use labelled data"
        )
    tensors = (dataset.images, dataset.labels) if with_labels else dataset.images
    pipeline = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        pipeline = pipeline.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True)
    pipeline = pipeline.batch(batch_size, drop_remainder=drop_remainder)
    return pipeline.prefetch(tf.data.AUTOTUNE)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map [-1, 1] floats to uint8 [0, 255], rounding and clipping."""
    return np.clip(np.round((np.asarray(images, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# --- argument checks -------------------------------------------------------------------------------------


def _check_options(image_size: int | None, channels: int | None, limit: int | None, split: str) -> None:
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None for every example), got {limit}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _parse_spec(spec: str) -> tuple[str, str | None]:
    kind, colon, rest = spec.partition(":")
    if kind in ("mnist", "fashion_mnist", "shapes") and not colon:
        return kind, None
    if kind in ("folder", "npz"):
        return kind, rest or None
    raise ValueError(f"unknown dataset {spec!r}: choose one of {', '.join(DATASET_NAMES)}")


def _resolve_path(kind: str, spec_path: str | None, data_path: str | Path | None) -> Path | None:
    if kind == "shapes" and data_path is not None:
        raise ValueError("the 'shapes' dataset is generated, not read from disk: drop the data path")
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


# --- pixel conversion ------------------------------------------------------------------------------------


def _finish(
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
    scaled = _convert_channels(scaled, channels or scaled.shape[-1])
    label_array = labels.astype(np.int64) if labels is not None else None
    return ImageDataset(spec, scaled, label_array, class_names)


def _scale_to_unit_range(images: np.ndarray, spec: str) -> np.ndarray:
    """Scale integer [0, 255] or float [0, 1] / [-1, 1] / [0, 255] pixels to float32 [-1, 1]."""
    if images.size == 0:
        raise ValueError(f"{spec!r} holds no images")
    low, high = float(images.min()), float(images.max())
    if np.issubdtype(images.dtype, np.integer) or high > 1.0:
        if low < 0 or high > 255:
            raise ValueError(f"{spec!r} pixels span [{low}, {high}]: expected [0, 255], [0, 1] or [-1, 1]")
        return (images.astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    if low >= 0.0:
        return (images.astype(np.float32) * 2.0 - 1.0).astype(np.float32)
    if low >= -1.0:
        return images.astype(np.float32)
    raise ValueError(f"{spec!r} pixels span [{low}, {high}]: expected [0, 255], [0, 1] or [-1, 1]")


def _ensure_channel_axis(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images[..., np.newaxis]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
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


def _convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    current = images.shape[-1]
    if current == channels:
        return images
    if current == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if current == 3 and channels == 1:
        # Luma weights sum to one, so a [-1, 1] input stays in [-1, 1].
        return (images @ _LUMA)[..., np.newaxis].astype(np.float32)
    raise ValueError(f"cannot convert {current}-channel images to {channels} channels: use 1 or 3")


def _held_out_mask(count: int, split: Split) -> np.ndarray:
    """True for the examples of `split` under the every-tenth hold-out rule."""
    if count < HELD_OUT_EVERY:
        return np.ones(count, dtype=bool)
    is_test = np.arange(count) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    return is_test if split == "test" else ~is_test


# --- shapes ----------------------------------------------------------------------------------------------


def shapes_images(
    count: int, *, image_size: int = 28, channels: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`count` images of one bright circle, square or triangle on a dark background, with their class.

    Deterministic in `seed`. Edges are anti-aliased by rendering at twice the size and averaging.
    """
    if count < 1 or image_size < 4:
        raise ValueError(f"need count >= 1 and image_size >= 4, got count={count}, image_size={image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, len(SHAPE_NAMES), size=count).astype(np.int64)
    radius = rng.uniform(0.2, 0.4, size=count) * image_size
    centre_x = radius + rng.uniform(0.0, 1.0, size=count) * (image_size - 2 * radius)
    centre_y = radius + rng.uniform(0.0, 1.0, size=count) * (image_size - 2 * radius)
    colour = rng.uniform(0.45, 1.0, size=(count, 3))
    background = rng.uniform(0.0, 0.15, size=(count, 3))
    coverage = _shape_coverage(labels, centre_x, centre_y, radius, image_size)[..., np.newaxis]
    images = background[:, None, None, :] * (1.0 - coverage) + colour[:, None, None, :] * coverage
    return _convert_channels((images * 2.0 - 1.0).astype(np.float32), channels), labels


def _shape_coverage(
    labels: np.ndarray, centre_x: np.ndarray, centre_y: np.ndarray, radius: np.ndarray, image_size: int
) -> np.ndarray:
    """Fraction of each pixel covered by its image's shape, [N, size, size] in [0, 1]."""
    fine = 2 * image_size
    grid = (np.arange(fine) + 0.5) / 2.0
    x, y = grid[np.newaxis, np.newaxis, :], grid[np.newaxis, :, np.newaxis]
    dx, dy = x - centre_x[:, None, None], y - centre_y[:, None, None]
    r = radius[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    half_side = 0.8 * r
    square = (np.abs(dx) <= half_side) & (np.abs(dy) <= half_side)
    # Apex at the top, base below the centre; half-width grows linearly from the apex down.
    depth = dy + r
    triangle = (depth >= 0) & (dy <= 0.7 * r) & (np.abs(dx) <= depth * (r / (1.7 * r)))
    kind = labels[:, None, None]
    mask = np.where(kind == 0, circle, np.where(kind == 1, square, triangle)).astype(np.float32)
    return mask.reshape(len(labels), image_size, 2, image_size, 2).mean(axis=(2, 4))


def _load_shapes(
    split: Split, image_size: int, seed: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    if split == "train":
        count, split_seed = SHAPES_TRAIN_COUNT, seed
    else:
        count = SHAPES_TEST_COUNT
        split_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    images, labels = shapes_images(count, image_size=image_size, seed=split_seed)
    if limit is not None:
        return images[:limit], labels[:limit]
    return images, labels


# --- MNIST and Fashion-MNIST -----------------------------------------------------------------------------


def _read_mnist_like(kind: str, path: Path | None, split: Split) -> tuple[np.ndarray, np.ndarray]:
    if path is None:
        return _download_with_keras(kind, split)
    if not path.exists():
        raise DatasetNotFoundError(f"{kind} data path {str(path)!r} does not exist")
    if path.is_file() and path.suffix == ".npz":
        return _read_keras_npz(path, split)
    folder = path if path.is_dir() else path.parent
    idx_images, idx_labels = (_find_idx_file(folder, stem) for stem in _IDX_FILES[split])
    if idx_images is not None and idx_labels is not None:
        return _read_idx(idx_images, ndim=3), _read_idx(idx_labels, ndim=1)
    bundled = folder / f"{kind}.npz"
    if bundled.is_file():
        return _read_keras_npz(bundled, split)
    raise DatasetNotFoundError(
        f"no {kind} data in {str(folder)!r}: expected {_IDX_FILES[split][0]}.gz and "
        f"{_IDX_FILES[split][1]}.gz, or a Keras-format {kind}.npz"
    )


def _download_with_keras(kind: str, split: Split) -> tuple[np.ndarray, np.ndarray]:
    import keras

    loader = keras.datasets.mnist if kind == "mnist" else keras.datasets.fashion_mnist
    try:
        train, test = loader.load_data()
    except Exception as error:  # any download/unpack failure means the same thing to the user
        raise ValueError(
            f"could not download {kind} ({error}): pass --data PATH with a Keras-format .npz or the folder "
            "holding the IDX .gz files"
        ) from error
    images, labels = train if split == "train" else test
    return np.asarray(images), np.asarray(labels)


def _read_keras_npz(path: Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    suffix = "train" if split == "train" else "test"
    with _open_npz(path) as archive:
        missing = [key for key in (f"x_{suffix}", f"y_{suffix}") if key not in archive.files]
        if missing:
            raise ValueError(
                f"{str(path)!r} lacks {missing}: a Keras-format npz holds x_train, y_train, x_test, y_test "
                f"(found {archive.files})"
            )
        return archive[f"x_{suffix}"], archive[f"y_{suffix}"]


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zlib.error) as error:
        raise ValueError(f"{str(path)!r} is not a readable .npz file ({error})") from error


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) of unsigned bytes with `ndim` dimensions."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{str(path)!r} is corrupt: could not decompress it ({error})") from error
    header_size = 4 + 4 * ndim
    if len(raw) < header_size or raw[0:2] != b"\x00\x00":
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    if raw[2] != _IDX_UNSIGNED_BYTE or raw[3] != ndim:
        raise ValueError(
            f"{str(path)!r} holds type 0x{raw[2]:02x} with {raw[3]} dimensions: expected unsigned bytes "
            f"(0x08) with {ndim}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{str(path)!r} is corrupt: header promises {expected} bytes of data for shape {shape}, "
            f"found {len(raw) - header_size}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


# --- npz:PATH --------------------------------------------------------------------------------------------


def _read_generic_npz(path: Path, split: Split) -> tuple[np.ndarray, np.ndarray | None]:
    with _open_npz(path) as archive:
        keys = list(archive.files)
        image_key = _pick_image_key(keys, path)
        if image_key == "x_train" and "x_test" in keys:
            # A separate test array replaces the every-tenth hold-out rule.
            suffix = "train" if split == "train" else "test"
            labels_key = f"y_{suffix}"
            return archive[f"x_{suffix}"], (archive[labels_key] if labels_key in keys else None)
        images = archive[image_key]
        label_key = next((key for key in _NPZ_LABEL_KEYS if key in keys), None)
        labels = archive[label_key] if label_key is not None else None
    mask = _held_out_mask(len(images), split)
    return images[mask], (labels[mask] if labels is not None else None)


def _pick_image_key(keys: list[str], path: Path) -> str:
    for key in _NPZ_IMAGE_KEYS:
        if key in keys:
            return key
    if len(keys) == 1:
        return keys[0]
    raise ValueError(
        f"{str(path)!r} holds arrays {keys}: name the image array one of {', '.join(_NPZ_IMAGE_KEYS)}"
    )


# --- folder:PATH -----------------------------------------------------------------------------------------


def _load_folder(
    spec: str, folder: Path, image_size: int | None, channels: int | None, limit: int | None, split: Split
) -> ImageDataset:
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {str(folder)!r} is not a directory")
    files = sorted(
        (file for file in folder.rglob("*") if file.suffix.lower() in IMAGE_EXTENSIONS and file.is_file()),
        key=lambda file: file.relative_to(folder).as_posix(),
    )
    class_names, all_labels = _folder_classes(folder, files)
    mask = _held_out_mask(len(files), split)
    chosen = [file for file, keep in zip(files, mask, strict=True) if keep]
    chosen_labels = all_labels[mask] if all_labels is not None else None
    size = image_size or FOLDER_DEFAULT_SIZE
    pixels, kept = _decode_images(chosen, size, limit)
    if not pixels:
        raise ValueError(f"no readable PNG, JPEG or WebP images in folder {str(folder)!r}")
    images = (np.stack(pixels).astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    labels = chosen_labels[kept] if chosen_labels is not None else None
    return ImageDataset(spec, _convert_channels(images, channels or 3), labels, class_names)


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
