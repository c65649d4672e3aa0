"""Fixture files for the dataset readers: MNIST's IDX folder and a Keras-format npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.datasets.files import digits, write_idx


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, count, seed in (("train", 12, 1), ("t10k", 4, 2)):
        images, labels = digits(count, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def keras_npz(tmp_path: Path) -> Path:
    x_train, y_train = digits(20, 3)
    x_test, y_test = digits(6, 4)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
