"""MNIST and Fashion-MNIST: downloaded by Keras, or read from a Keras-format ``.npz`` or the IDX files."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from training.datasets.core import DatasetNotFoundError, Split
from training.datasets.npz import open_npz

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
CLASS_NAMES = {"mnist": DIGIT_NAMES, "fashion_mnist": FASHION_NAMES}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UNSIGNED_BYTE = 0x08


def read_mnist_like(kind: str, path: Path | None, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 28, 28]`` and labels of `split`, downloaded when `path` is None."""
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
    with open_npz(path) as archive:
        missing = [key for key in (f"x_{suffix}", f"y_{suffix}") if key not in archive.files]
        if missing:
            raise ValueError(
                f"{str(path)!r} lacks {missing}: a Keras-format npz holds x_train, y_train, x_test, y_test "
                f"(found {archive.files})"
            )
        return archive[f"x_{suffix}"], archive[f"y_{suffix}"]


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
