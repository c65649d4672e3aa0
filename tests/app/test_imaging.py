"""Grids, animations, archives and arrays decode back to the pixels that went in."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image

from app import imaging
from tests.app.helpers import decode_npy, decode_png, frame_count


def images(count: int, channels: int) -> np.ndarray:
    return np.random.RandomState(0).randint(0, 256, (count, 6, 5, channels), dtype=np.uint8)


def test_grid_places_tiles_row_major_with_padding() -> None:
    batch = images(5, 3)
    grid = imaging.make_grid(batch, columns=2, padding=1)
    assert grid.shape == (3 * 7 + 1, 2 * 6 + 1, 3)
    np.testing.assert_array_equal(grid[1:7, 1:6], batch[0])
    np.testing.assert_array_equal(grid[8:14, 7:12], batch[3])
    np.testing.assert_array_equal(grid[15:21, 1:6], batch[4])
    assert grid[15:21, 7:12].max() == 0


def test_grayscale_png_round_trips() -> None:
    image = images(1, 1)[0]
    decoded = decode_png(imaging.encode_png(image))
    np.testing.assert_array_equal(decoded, image)
    assert Image.open(io.BytesIO(imaging.encode_png(image))).mode == "L"


def test_npy_and_zip_round_trip() -> None:
    batch = images(3, 3)
    np.testing.assert_array_equal(decode_npy(imaging.encode_npy(batch)), batch)
    with zipfile.ZipFile(io.BytesIO(imaging.encode_zip(batch, ["a.png", "b.png", "c.png"]))) as archive:
        np.testing.assert_array_equal(decode_png(archive.read("c.png")), batch[2])


def test_animations_keep_every_frame_and_loop() -> None:
    batch = images(4, 3)
    for image_format in ("GIF", "WEBP"):
        data = imaging.encode_animation(batch, fps=10, image_format=image_format)
        assert frame_count(data) == 4
        assert Image.open(io.BytesIO(data)).info.get("loop") == 0
    webp = Image.open(io.BytesIO(imaging.encode_animation(batch, fps=10, image_format="WEBP")))
    webp.seek(2)
    np.testing.assert_array_equal(np.asarray(webp.convert("RGB")), batch[2])
