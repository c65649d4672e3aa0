"""``folder:PATH``: image files, class subfolders and the every-tenth hold-out."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genserve.conventions import to_uint8
from tests.training.datasets.files import save_image
from training.datasets import DatasetNotFoundError, load_dataset


def test_folder_with_class_subfolders_skips_corrupt_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_image(tmp_path / "cats" / "a.png", (250, 10, 10))
    save_image(tmp_path / "cats" / "b.JPG", (240, 20, 20))
    save_image(tmp_path / "dogs" / "nested" / "c.webp", (10, 10, 250))
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")

    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(f"folder:{tmp_path}", image_size=8)

    assert "broken.png" in caplog.text
    assert dataset.image_shape == (8, 8, 3)
    assert dataset.class_names == ["cats", "dogs"]
    np.testing.assert_array_equal(dataset.labels, [0, 0, 1])
    assert to_uint8(dataset.images[2])[..., 2].min() > 200  # the blue WebP came through in order


def test_folder_default_size_and_flat_folder_has_no_labels(tmp_path: Path) -> None:
    save_image(tmp_path / "one.png", (0, 0, 0), size=(100, 80))
    save_image(tmp_path / "two.jpeg", (255, 255, 255), size=(30, 50))

    dataset = load_dataset(f"folder:{tmp_path}")

    assert dataset.image_shape == (64, 64, 3)
    assert dataset.labels is None and dataset.class_names is None


def test_folder_centre_crops_to_a_square(tmp_path: Path) -> None:
    image = np.zeros((20, 60, 3), dtype=np.uint8)
    image[:, 20:40] = 255  # only the centre square is white
    Image.fromarray(image).save(tmp_path / "wide.png")

    dataset = load_dataset(f"folder:{tmp_path}", image_size=10)

    assert to_uint8(dataset.images).min() == 255


def test_folder_holds_out_every_tenth_image(tmp_path: Path) -> None:
    for index in range(20):
        save_image(tmp_path / f"{index:02d}.png", (index * 10, 0, 0), size=(4, 4))

    train = load_dataset(f"folder:{tmp_path}", image_size=4)
    test = load_dataset(f"folder:{tmp_path}", image_size=4, split="test")

    assert (len(train), len(test)) == (18, 2)
    np.testing.assert_array_equal(to_uint8(test.images)[:, 0, 0, 0], [90, 190])
    assert not set(to_uint8(test.images)[:, 0, 0, 0]) & set(to_uint8(train.images)[:, 0, 0, 0])


def test_small_folder_uses_every_image_for_both_splits(tmp_path: Path) -> None:
    for index in range(3):
        save_image(tmp_path / f"{index}.png", (index, 0, 0), size=(4, 4))

    assert len(load_dataset(f"folder:{tmp_path}", split="test", image_size=4)) == 3


def test_folder_without_readable_images_raises_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"garbage")

    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        load_dataset(f"folder:{tmp_path}")


def test_empty_or_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no readable"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError, match="missing-dir"):
        load_dataset(f"folder:{tmp_path / 'missing-dir'}")
