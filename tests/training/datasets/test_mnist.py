"""MNIST and Fashion-MNIST from a Keras npz, IDX files or a download."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest

from genserve.conventions import to_uint8
from tests.training.datasets.files import digits
from training.datasets import DatasetNotFoundError, load_dataset


def test_mnist_reads_keras_npz_and_scales_to_unit_range(keras_npz: Path) -> None:
    train = load_dataset("mnist", data_path=keras_npz)
    test = load_dataset("mnist", data_path=keras_npz, split="test")

    expected_images, expected_labels = digits(20, 3)
    assert train.name == "mnist"
    assert train.images.dtype == np.float32
    assert train.image_shape == (28, 28, 1)
    assert len(train) == 20 and len(test) == 6
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    np.testing.assert_array_equal(to_uint8(train.images[..., 0]), expected_images)
    assert train.labels is not None and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.labels, expected_labels)
    assert train.class_names == [str(digit) for digit in range(10)]


def test_fashion_mnist_reads_idx_folder_or_one_of_its_files(idx_folder: Path) -> None:
    from_folder = load_dataset("fashion_mnist", data_path=idx_folder)
    from_file = load_dataset("fashion_mnist", data_path=idx_folder / "train-images-idx3-ubyte.gz")
    held_out = load_dataset("fashion_mnist", data_path=str(idx_folder), split="test")

    expected_images, expected_labels = digits(12, 1)
    np.testing.assert_array_equal(to_uint8(from_folder.images[..., 0]), expected_images)
    np.testing.assert_array_equal(from_folder.labels, expected_labels)
    np.testing.assert_array_equal(from_file.images, from_folder.images)
    assert len(held_out) == 4
    assert from_folder.class_names is not None and from_folder.class_names[0] == "T-shirt/top"
    assert len(from_folder.class_names) == 10


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: b"\x01\x02" + raw[2:], id="bad-magic"),
        pytest.param(lambda raw: raw[:-10], id="truncated-data"),
    ],
)
def test_corrupt_idx_raises_naming_the_file(idx_folder: Path, damage: Callable[[bytes], bytes]) -> None:
    path = idx_folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))

    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion_mnist", data_path=idx_folder)


def test_idx_that_is_not_gzip_raises_corrupt(idx_folder: Path) -> None:
    (idx_folder / "train-labels-idx1-ubyte.gz").write_bytes(b"definitely not gzip")

    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("fashion_mnist", data_path=idx_folder)


def test_missing_data_path_raises_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mnist.npz"

    with pytest.raises(DatasetNotFoundError, match="nowhere") as caught:
        load_dataset("mnist", data_path=missing)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, ValueError)


def test_folder_without_mnist_files_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_path=tmp_path)


def test_mnist_download_failure_tells_to_pass_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline() -> None:
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)

    with pytest.raises(ValueError, match="--data PATH"):
        load_dataset("mnist")
