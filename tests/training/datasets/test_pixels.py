"""Resizing and channel conversion of loaded images, and their uint8 round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve.conventions import to_uint8
from tests.training.datasets.files import save_image
from training.datasets import load_dataset


def test_resize_and_gray_to_rgb(keras_npz: Path) -> None:
    dataset = load_dataset("mnist", data_path=keras_npz, image_size=14, channels=3, limit=5)

    assert dataset.image_shape == (14, 14, 3) and len(dataset) == 5
    np.testing.assert_array_equal(dataset.images[..., 0], dataset.images[..., 2])
    assert -1.0 <= dataset.images.min() and dataset.images.max() <= 1.0


def test_rgb_to_gray_uses_luma(tmp_path: Path) -> None:
    save_image(tmp_path / "white.png", (255, 255, 255), size=(4, 4))
    save_image(tmp_path / "red.png", (255, 0, 0), size=(4, 4))

    dataset = load_dataset(f"folder:{tmp_path}", image_size=4, channels=1)

    assert dataset.image_shape == (4, 4, 1)
    np.testing.assert_allclose(dataset.images[:, 0, 0, 0], [0.299 * 2 - 1, 1.0], atol=1e-5)


def test_to_uint8_maps_the_unit_range() -> None:
    result = to_uint8(np.array([-1.5, -1.0, 0.0, 1.0, 2.0], dtype=np.float32))

    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, [0, 0, 128, 255, 255])
