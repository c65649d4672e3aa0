"""DiffAugment (Zhao et al. 2020): the same random, differentiable augmentations for real and generated images.

Before every discriminator call, real and generated images alike go through the same family of random
augmentations (each image its own draw), so the discriminator cannot memorise the training images while
the generator still gets gradients through the augmentation and is never asked to draw augmented images.
The policies are those of `training.config.DIFFAUGMENT_POLICIES`: color, translation and cutout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from training.options import check_diffaugment_policies

# The paper's settings: shifts of up to 1/8 of the image, a cut-out square of half its side.
_TRANSLATION_RATIO = 0.125
_CUTOUT_RATIO = 0.5
# What translation shifts in and cutout writes. The paper's code writes 0, mid grey in our [-1, 1] range;
# -1 (black) is the background of MNIST-like data, so a shifted or cut digit still lies on its own
# background instead of next to a grey band no real image has. Real and fake images get the same fill, so
# either choice is fair to both; this one keeps the augmented images closer to the data.
AUGMENT_FILL = -1.0


def diff_augment(images: tf.Tensor, policies: Sequence[str], seed: keras.random.SeedGenerator) -> tf.Tensor:
    """DiffAugment: each image ``[N, H, W, C]`` gets its own random draw of every policy named.

    The policies run in the paper's order (color, translation, cutout) whatever order they are named in.
    Every step is built from differentiable TensorFlow ops and stateless random numbers drawn from `seed`,
    so gradients reach the generator and a seeded run repeats exactly, also under op determinism.
    """
    for policy in check_diffaugment_policies(policies):
        images = _AUGMENTATIONS[policy](images, seed)
    return images


def random_color(images: tf.Tensor, seed: keras.random.SeedGenerator) -> tf.Tensor:
    """Shift brightness by up to ±0.5, scale saturation by 0 to 2 and contrast by 0.5 to 1.5, per image.

    Saturation mixes the channels towards their mean, so grayscale images skip it.
    """
    shape = (tf.shape(images)[0], 1, 1, 1)
    images = images + keras.random.uniform(shape, -0.5, 0.5, seed=seed)
    if images.shape[-1] != 1:
        grey = tf.reduce_mean(images, axis=-1, keepdims=True)
        images = (images - grey) * keras.random.uniform(shape, 0.0, 2.0, seed=seed) + grey
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * keras.random.uniform(shape, 0.5, 1.5, seed=seed) + mean


def random_translation(images: tf.Tensor, seed: keras.random.SeedGenerator) -> tf.Tensor:
    """Shift each image by up to 1/8 of its size along each axis, filling what comes in with `AUGMENT_FILL`."""
    batch = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    max_rows, max_columns = _fraction_of(height, _TRANSLATION_RATIO), _fraction_of(width, _TRANSLATION_RATIO)
    row_shifts = keras.random.randint((batch,), -max_rows, max_rows + 1, seed=seed)
    column_shifts = keras.random.randint((batch,), -max_columns, max_columns + 1, seed=seed)
    # Shifting is multiplying by 0/1 matrices that pick each output row (column) from its source one:
    # plain batched matmuls, so the op differentiates, stays deterministic and needs no gather.
    rows = _shift_matrices(row_shifts, height, images.dtype)
    columns = _shift_matrices(column_shifts, width, images.dtype)
    moved = tf.einsum("bij,bjwc->biwc", rows, images)
    moved = tf.einsum("bkw,bhwc->bhkc", columns, moved)
    covered_rows = tf.reduce_sum(rows, axis=2)[:, :, None, None]
    covered_columns = tf.reduce_sum(columns, axis=2)[:, None, :, None]
    return moved + AUGMENT_FILL * (1.0 - covered_rows * covered_columns)


def _fraction_of(size: int, ratio: float) -> int:
    """`size * ratio` rounded half up (4 of 28 pixels for translation, 14 for cutout)."""
    return int(size * ratio + 0.5)


def _shift_matrices(shifts: tf.Tensor, size: int, dtype: tf.DType) -> tf.Tensor:
    """``[N, size, size]``: entry (i, j) is 1 where output index i takes input index j = i - shift."""
    index = tf.range(size, dtype=shifts.dtype)
    sources = index[None, :, None] - shifts[:, None, None]
    return tf.cast(tf.equal(sources, index[None, None, :]), dtype)


def random_cutout(images: tf.Tensor, seed: keras.random.SeedGenerator) -> tf.Tensor:
    """Set a square of half the image's side to `AUGMENT_FILL` in each image.

    The square's centre is uniform over the image, so near a border part of it falls outside.
    """
    batch = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    cut_rows = _cut_mask(batch, height, _fraction_of(height, _CUTOUT_RATIO), seed)
    cut_columns = _cut_mask(batch, width, _fraction_of(width, _CUTOUT_RATIO), seed)
    cut = tf.cast(cut_rows[:, :, None, None] & cut_columns[:, None, :, None], images.dtype)
    return images * (1.0 - cut) + AUGMENT_FILL * cut


def _cut_mask(batch: tf.Tensor, size: int, length: int, seed: keras.random.SeedGenerator) -> tf.Tensor:
    """``[N, size]`` booleans: a run of `length` indices starting anywhere from -length/2 to size - length/2."""
    half = length // 2
    starts = keras.random.randint((batch, 1), -half, size - half + 1, seed=seed)
    index = tf.range(size, dtype=starts.dtype)[None, :]
    return (index >= starts) & (index < starts + length)


_AUGMENTATIONS: dict[str, Callable[[tf.Tensor, keras.random.SeedGenerator], tf.Tensor]] = {
    "color": random_color,
    "translation": random_translation,
    "cutout": random_cutout,
}
