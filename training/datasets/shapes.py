"""The ``shapes`` dataset: one bright circle, square or triangle per image on a dark background, generated."""

from __future__ import annotations

import numpy as np

from genserve.conventions import check_channels
from training.datasets.core import Split
from training.datasets.pixels import convert_channels

SHAPE_NAMES = ["circle", "square", "triangle"]
SHAPES_TRAIN_COUNT = 2048
SHAPES_TEST_COUNT = 512
SHAPES_NATIVE_SIZE = 28

_MIN_IMAGE_SIZE = 4  # below this a shape is a blob of a pixel or two
# Each shape fits in a circle whose radius is this fraction of the image size; colours are per channel in
# [0, 1], bright shapes on a dark background like MNIST's strokes.
_RADIUS_RANGE = (0.2, 0.4)
_SHAPE_COLOUR_RANGE = (0.45, 1.0)
_BACKGROUND_COLOUR_RANGE = (0.0, 0.15)
# Shapes are drawn at this many times the size and averaged down, which anti-aliases their edges.
_SUPERSAMPLING = 2
# In radii: the square's half side, and the triangle's apex-to-base height with its base below the centre.
_SQUARE_HALF_SIDE = 0.8
_TRIANGLE_HEIGHT = 1.7
_TRIANGLE_BASE_BELOW_CENTRE = 0.7
# The test split draws from its own stream of the dataset seed, so it shares no image with the train split.
_TEST_SPLIT_STREAM = 1


def shapes_images(
    count: int, *, image_size: int = SHAPES_NATIVE_SIZE, channels: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`count` images of one bright circle, square or triangle on a dark background, with their class.

    Deterministic in `seed`. Edges are anti-aliased by rendering at twice the size and averaging.
    """
    if count < 1 or image_size < _MIN_IMAGE_SIZE:
        raise ValueError(
            f"need count >= 1 and image_size >= {_MIN_IMAGE_SIZE}, got count={count}, image_size={image_size}"
        )
    check_channels(channels)
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, len(SHAPE_NAMES), size=count).astype(np.int64)
    radius = rng.uniform(*_RADIUS_RANGE, size=count) * image_size
    centre_x = radius + rng.uniform(0.0, 1.0, size=count) * (image_size - 2 * radius)
    centre_y = radius + rng.uniform(0.0, 1.0, size=count) * (image_size - 2 * radius)
    colour = rng.uniform(*_SHAPE_COLOUR_RANGE, size=(count, 3))
    background = rng.uniform(*_BACKGROUND_COLOUR_RANGE, size=(count, 3))
    coverage = _shape_coverage(labels, centre_x, centre_y, radius, image_size)[..., np.newaxis]
    images = background[:, None, None, :] * (1.0 - coverage) + colour[:, None, None, :] * coverage
    return convert_channels((images * 2.0 - 1.0).astype(np.float32), channels), labels


def load_shapes(split: Split, image_size: int, seed: int, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The RGB images and labels of one split of the ``shapes`` dataset."""
    if split == "train":
        count, split_seed = SHAPES_TRAIN_COUNT, seed
    else:
        count = SHAPES_TEST_COUNT
        split_seed = int(np.random.SeedSequence([seed, _TEST_SPLIT_STREAM]).generate_state(1)[0])
    images, labels = shapes_images(count, image_size=image_size, seed=split_seed)
    if limit is not None:
        return images[:limit], labels[:limit]
    return images, labels


def _shape_coverage(
    labels: np.ndarray, centre_x: np.ndarray, centre_y: np.ndarray, radius: np.ndarray, image_size: int
) -> np.ndarray:
    """Fraction of each pixel covered by its image's shape, [N, size, size] in [0, 1]."""
    fine = _SUPERSAMPLING * image_size
    grid = (np.arange(fine) + 0.5) / _SUPERSAMPLING
    x, y = grid[np.newaxis, np.newaxis, :], grid[np.newaxis, :, np.newaxis]
    dx, dy = x - centre_x[:, None, None], y - centre_y[:, None, None]
    r = radius[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    half_side = _SQUARE_HALF_SIDE * r
    square = (np.abs(dx) <= half_side) & (np.abs(dy) <= half_side)
    # Apex at the top, base below the centre; half-width grows linearly from the apex down.
    depth = dy + r
    triangle = (
        (depth >= 0)
        & (dy <= _TRIANGLE_BASE_BELOW_CENTRE * r)
        & (np.abs(dx) <= depth * (r / (_TRIANGLE_HEIGHT * r)))
    )
    kind = labels[:, None, None]
    mask = np.where(kind == 0, circle, np.where(kind == 1, square, triangle)).astype(np.float32)
    blocks = mask.reshape(len(labels), image_size, _SUPERSAMPLING, image_size, _SUPERSAMPLING)
    return blocks.mean(axis=(2, 4))
