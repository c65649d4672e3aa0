"""DiffAugment: shapes, seeding, what each policy does to an image, and gradients through it."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.diffaugment import AUGMENT_FILL, diff_augment, random_color, random_cutout, random_translation
from training.options import DIFFAUGMENT_POLICIES

SIZE = 28
MAX_SHIFT = 4  # 1/8 of 28 pixels, rounded
CUTOUT_SIDE = 14


def _images(count: int = 16, channels: int = 1, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.RandomState(seed).uniform(-1, 1, (count, SIZE, SIZE, channels)), tf.float32)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policies", [("color",), ("translation",), ("cutout",), DIFFAUGMENT_POLICIES])
def test_diff_augment_keeps_shape_and_dtype_and_repeats_under_a_seed(
    policies: tuple[str, ...], channels: int
) -> None:
    images = _images(channels=channels)

    first = diff_augment(images, policies, keras.random.SeedGenerator(7))
    again = diff_augment(images, policies, keras.random.SeedGenerator(7))
    other = diff_augment(images, policies, keras.random.SeedGenerator(8))

    assert first.shape == images.shape and first.dtype == tf.float32
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    assert not np.array_equal(first.numpy(), images.numpy())


def test_diff_augment_draws_afresh_at_every_call_even_inside_a_tf_function() -> None:
    seed = keras.random.SeedGenerator(0)
    augment = tf.function(lambda images: diff_augment(images, DIFFAUGMENT_POLICIES, seed))
    images = _images(count=4)

    assert not np.array_equal(augment(images).numpy(), augment(images).numpy())


def _shifted(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`image` moved down by `rows` and right by `columns`, the uncovered part filled."""
    out = np.full_like(image, AUGMENT_FILL)
    height, width = image.shape[:2]
    out[max(rows, 0) : height + min(rows, 0), max(columns, 0) : width + min(columns, 0)] = image[
        max(-rows, 0) : height - max(rows, 0), max(-columns, 0) : width - max(columns, 0)
    ]
    return out


def test_translation_moves_each_image_by_at_most_an_eighth_and_fills_with_the_background() -> None:
    ramp = np.arange(SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE, 1) / (SIZE * SIZE)
    images = np.repeat(ramp[None], 16, axis=0)

    moved = random_translation(tf.constant(images), keras.random.SeedGenerator(3)).numpy()

    shifts = range(-MAX_SHIFT, MAX_SHIFT + 1)
    found = []
    for image in moved:
        matches = [
            (r, c) for r, c in itertools.product(shifts, shifts) if np.allclose(image, _shifted(ramp, r, c))
        ]
        assert len(matches) == 1, "each image is its input shifted by one offset within the limit"
        found.append(matches[0])
    assert len(set(found)) > 1 and any(shift != (0, 0) for shift in found)


def test_cutout_blanks_one_clipped_square_of_half_the_side_and_leaves_the_rest() -> None:
    images = np.ones((32, SIZE, SIZE, 3), np.float32)

    cut = random_cutout(tf.constant(images), keras.random.SeedGenerator(5)).numpy()

    blanked = cut == AUGMENT_FILL
    np.testing.assert_array_equal(cut[~blanked], 1.0)
    for mask in blanked.all(axis=-1):
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        np.testing.assert_array_equal(mask, np.outer(mask.any(axis=1), mask.any(axis=0)))
        for run in (rows, columns):
            assert CUTOUT_SIDE // 2 <= len(run) <= CUTOUT_SIDE
            assert run[-1] - run[0] == len(run) - 1
    assert len({tuple(np.flatnonzero(mask.any(axis=1))) for mask in blanked.all(axis=-1)}) > 1


def test_color_changes_a_grayscale_image_by_one_affine_map_per_image() -> None:
    images = _images(count=8)

    jittered = random_color(images, keras.random.SeedGenerator(0)).numpy()

    for before, after in zip(images.numpy().ravel().reshape(8, -1), jittered.reshape(8, -1), strict=True):
        scale, offset = np.polyfit(before, after, 1)
        np.testing.assert_allclose(after, scale * before + offset, atol=1e-5)
        assert 0.5 <= scale < 1.5
    assert not np.allclose(jittered, images.numpy())


def test_gradients_flow_through_the_augmentation_except_where_it_cut() -> None:
    images = tf.Variable(_images(count=8, channels=3))
    weights = tf.constant(np.random.RandomState(1).randn(*images.shape), tf.float32)

    with tf.GradientTape(persistent=True) as tape:
        every_policy = tf.reduce_sum(
            diff_augment(images, DIFFAUGMENT_POLICIES, keras.random.SeedGenerator(2)) * weights
        )
        moved_and_cut = tf.reduce_sum(
            diff_augment(images, ("translation", "cutout"), keras.random.SeedGenerator(2)) * weights
        )
    through_all = tape.gradient(every_policy, images).numpy()
    through_moved_and_cut = tape.gradient(moved_and_cut, images).numpy()

    # Color's contrast mixes every pixel into every other, so all of them get a gradient.
    assert np.isfinite(through_all).all() and (through_all != 0).all()
    for per_image in through_moved_and_cut.reshape(8, -1):
        # What was shifted out or cut away gets none: at worst a 4-pixel band each way and a 14x14 square.
        assert (24 * 24 - 14 * 14) / (28 * 28) <= np.mean(per_image != 0) < 1.0
