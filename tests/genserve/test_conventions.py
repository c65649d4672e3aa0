"""The conventions training and serving share: seeds, pixel scaling, channels, class cycling and grids."""

from __future__ import annotations

import numpy as np
import pytest

from genserve import conventions


def test_each_latent_depends_only_on_its_seed() -> None:
    together = conventions.latents_from_seeds([5, 6, 7], 12)
    alone = conventions.latents_from_seeds([6], 12)
    np.testing.assert_array_equal(together[1], alone[0])
    np.testing.assert_allclose(alone[0], np.random.RandomState(6).randn(12).astype(np.float32))
    assert together.dtype == np.float32 and together.shape == (3, 12)


def test_a_reused_generator_gives_the_same_latents_as_fresh_ones() -> None:
    generator = np.random.RandomState(123)
    reused = conventions.latents_from_seeds(range(4), 5, generator)
    np.testing.assert_array_equal(reused, conventions.latents_from_seeds([0, 1, 2, 3], 5))


def test_pixels_round_trip_through_the_unit_range() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    unit = conventions.to_unit_range(pixels)
    assert unit.dtype == np.float32 and unit.min() == -1.0 and unit.max() == 1.0
    np.testing.assert_array_equal(conventions.to_uint8(unit), pixels)


def test_to_uint8_rounds_and_clips() -> None:
    values = np.array([-3.0, -1.0, 0.0, 0.999, 1.0, 7.0], dtype=np.float32)
    np.testing.assert_array_equal(conventions.to_uint8(values), [0, 0, 128, 255, 255, 255])


def test_unlabelled_images_cycle_through_the_classes() -> None:
    labels = conventions.cycled_labels(7, 3)
    assert labels.dtype == np.int32
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("channels", [0, 2, 4])
def test_only_grayscale_or_rgb_channels_are_accepted(channels: int) -> None:
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\)"):
        conventions.check_channels(channels)
    assert conventions.check_channels(3) == 3


def test_grid_places_tiles_row_major_with_padding() -> None:
    batch = np.random.RandomState(0).randint(1, 256, (5, 6, 5, 3), dtype=np.uint8)
    grid = conventions.tile_images(batch, columns=2, padding=1)
    assert grid.shape == (3 * 7 + 1, 2 * 6 + 1, 3)
    np.testing.assert_array_equal(grid[1:7, 1:6], batch[0])
    np.testing.assert_array_equal(grid[8:14, 7:12], batch[3])
    np.testing.assert_array_equal(grid[15:21, 1:6], batch[4])
    assert grid[15:21, 7:12].max() == 0


def test_grid_without_columns_is_near_square_and_without_padding_by_default() -> None:
    batch = np.ones((10, 2, 3, 1), dtype=np.uint8)
    grid = conventions.tile_images(batch)
    assert grid.shape == (3 * 2, 4 * 3, 1)
    assert grid.sum() == batch.sum()
