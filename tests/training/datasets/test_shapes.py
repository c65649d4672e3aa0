"""The procedural ``shapes`` dataset."""

from __future__ import annotations

import numpy as np

from training.datasets import load_dataset, shapes_images


def test_shapes_are_deterministic_in_the_seed() -> None:
    first, first_labels = shapes_images(64, seed=5)
    again, again_labels = shapes_images(64, seed=5)
    other, _ = shapes_images(64, seed=6)

    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_labels, again_labels)
    assert not np.array_equal(first, other)


def test_shapes_dataset_defaults() -> None:
    train = load_dataset("shapes")
    test = load_dataset("shapes", split="test")

    assert train.image_shape == (28, 28, 3) and len(train) == 2048 and len(test) == 512
    assert train.images.dtype == np.float32
    assert -1.0 <= train.images.min() and train.images.max() <= 1.0
    assert train.class_names == ["circle", "square", "triangle"]
    assert train.labels is not None and set(np.unique(train.labels)) == {0, 1, 2}
    assert not np.array_equal(train.images[:512], test.images)


def test_shapes_fill_their_bounding_box_as_their_name_says() -> None:
    images, labels = shapes_images(300, image_size=32, seed=1)
    fills = np.array([_bounding_box_fill(image) for image in images])

    square, circle, triangle = (fills[labels == label].mean() for label in (1, 0, 2))
    assert square > 0.9
    assert 0.7 < circle < 0.85  # pi / 4
    assert 0.4 < triangle < 0.62


def _bounding_box_fill(image: np.ndarray) -> float:
    inside = image.max(axis=-1) > -0.4  # shapes are bright, the background dark
    rows, columns = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    box = inside[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    return float(box.mean())


def test_shapes_at_other_size_and_grayscale() -> None:
    dataset = load_dataset("shapes", image_size=16, channels=1, limit=10)

    assert dataset.image_shape == (16, 16, 1) and len(dataset) == 10


def test_generation_is_vectorised() -> None:
    import time

    # CPU time of this process, not wall time, so other work on a busy machine does not count against it; the
    # vectorised generator needs a fraction of the bound.
    started = time.process_time()
    shapes_images(2048)
    assert time.process_time() - started < 2.0
