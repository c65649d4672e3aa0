"""``npz:PATH``: image arrays, labels, pixel ranges and test arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genserve.conventions import to_uint8
from training.datasets import load_dataset


def test_npz_uint8_with_labels_uses_every_tenth_as_test(tmp_path: Path) -> None:
    images = np.arange(30, dtype=np.uint8)[:, None, None, None] * np.ones((1, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(30) % 3)

    train = load_dataset(f"npz:{tmp_path / 'data.npz'}")
    test = load_dataset(f"npz:{tmp_path / 'data.npz'}", split="test")

    assert (len(train), len(test)) == (27, 3)
    np.testing.assert_array_equal(to_uint8(test.images)[:, 0, 0, 0], [9, 19, 29])
    np.testing.assert_array_equal(test.labels, [0, 1, 2])
    assert train.class_names is None


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        pytest.param(np.array([0.0, 0.5, 1.0]), [-1.0, 0.0, 1.0], id="float-0-1"),
        pytest.param(np.array([-1.0, 0.0, 1.0]), [-1.0, 0.0, 1.0], id="float-minus1-1"),
        pytest.param(np.array([0, 255, 51], dtype=np.uint8), [-1.0, 1.0, -0.6], id="uint8"),
    ],
)
def test_npz_detects_pixel_range(tmp_path: Path, pixels: np.ndarray, expected: list[float]) -> None:
    np.savez(tmp_path / "only.npz", whatever=np.broadcast_to(pixels[:, None, None], (3, 2, 2)).copy())

    dataset = load_dataset(f"npz:{tmp_path / 'only.npz'}")

    assert dataset.image_shape == (2, 2, 1)
    np.testing.assert_allclose(dataset.images[:, 0, 0, 0], expected, atol=1e-6)


def test_npz_with_x_test_uses_it_as_held_out(keras_npz: Path) -> None:
    assert len(load_dataset(f"npz:{keras_npz}", split="test")) == 6
    assert load_dataset(f"npz:{keras_npz}").labels is not None


def test_npz_with_ambiguous_arrays_says_which_key_to_use(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))

    with pytest.raises(ValueError, match="images"):
        load_dataset(f"npz:{tmp_path / 'two.npz'}")
