"""Turning uploaded files into the model's input: conversion, fitting and the checks' errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.image.uploads import UploadLimits, prepare_image
from app.server.errors import InvalidParameter, UnsupportedMediaType


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def limits(max_side: int) -> UploadLimits:
    return UploadLimits(
        max_bytes=1 << 20, max_side=max_side, max_pixels=1 << 24, max_request_pixels=1 << 26, max_files=4
    )


def test_rgb_is_converted_to_grayscale_for_one_channel_models() -> None:
    red = Image.new("RGB", (28, 28), (255, 0, 0))
    pixels = prepare_image("image", encoded(red), (28, 28, 1), limits(4096))

    assert pixels.shape == (28, 28, 1) and pixels.dtype == np.uint8
    assert int(pixels[0, 0, 0]) == round(255 * 299 / 1000)  # ITU-R 601 luma of pure red


def test_grayscale_is_spread_to_three_channels() -> None:
    grey = Image.new("L", (10, 10), 77)
    pixels = prepare_image("image", encoded(grey), (28, 28, 3), limits(4096))

    assert pixels.shape == (28, 28, 3)
    assert (pixels == 77).all()


def test_transparent_areas_become_white() -> None:
    stroke = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    stroke.paste((0, 0, 0, 255), (10, 0, 18, 28))
    pixels = prepare_image("image", encoded(stroke), (28, 28, 1), limits(4096))[..., 0]

    assert pixels[0, 0] == 255 and pixels[14, 14] == 0


def test_non_square_images_are_padded_with_their_border_colour_not_cropped() -> None:
    wide = np.zeros((20, 80), dtype=np.uint8)
    wide[:, :10] = 255  # a bright bar at the far left must survive the fit
    pixels = prepare_image("image", encoded(Image.fromarray(wide)), (28, 28, 1), limits(4096))[..., 0]

    assert pixels[:5].max() == 0 and pixels[-5:].max() == 0  # padding above and below in the border colour
    assert pixels[14, 0] > 200  # the bar is still there


def test_invert() -> None:
    grey = Image.new("L", (28, 28), 200)
    pixels = prepare_image("image", encoded(grey), (28, 28, 1), limits(4096), invert=True)
    assert (pixels == 55).all()


@pytest.mark.parametrize("image_format", ["JPEG", "WEBP", "GIF", "BMP"])
def test_other_accepted_formats_decode(image_format: str) -> None:
    grey = Image.new("L", (28, 28), 128)
    pixels = prepare_image("image", encoded(grey.convert("RGB"), image_format), (28, 28, 1), limits(4096))
    assert abs(int(pixels.mean()) - 128) <= 3


def test_formats_outside_the_list_are_refused() -> None:
    tiff = encoded(Image.new("L", (28, 28), 128), "TIFF")
    with pytest.raises(UnsupportedMediaType, match="image: is not an image in an accepted format"):
        prepare_image("image", tiff, (28, 28, 1), limits(4096))


@pytest.mark.parametrize("size", [(1, 28), (28, 65)])
def test_sides_outside_the_limits_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(
        InvalidParameter, match="start: is .* pixels; width and height must be between 2 and 64"
    ):
        prepare_image("start", encoded(Image.new("L", size)), (28, 28, 1), limits(64))
