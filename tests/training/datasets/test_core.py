"""`ImageDataset` and the `tf.data` pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from training.datasets import ImageDataset, make_tf_dataset


def _tiny_dataset(labels: bool = True) -> ImageDataset:
    images = np.linspace(-1, 1, 10 * 4 * 4 * 1, dtype=np.float32).reshape(10, 4, 4, 1)
    return ImageDataset("tiny", images, np.arange(10, dtype=np.int64) if labels else None, None)


def test_make_tf_dataset_batches_with_and_without_labels() -> None:
    dataset = _tiny_dataset()

    images_only = list(make_tf_dataset(dataset, 4, seed=0).as_numpy_iterator())
    labelled = list(make_tf_dataset(dataset, 4, seed=0, with_labels=True, drop_remainder=False))

    assert [batch.shape for batch in images_only] == [(4, 4, 4, 1), (4, 4, 4, 1)]
    assert [len(labels) for _, labels in labelled] == [4, 4, 2]
    seen = np.concatenate([labels.numpy() for _, labels in labelled])
    assert sorted(seen) == list(range(10))


def test_make_tf_dataset_shuffle_is_seeded() -> None:
    def order(seed: int) -> list[int]:
        batches = make_tf_dataset(_tiny_dataset(), 10, seed=seed, with_labels=True)
        return [int(label) for _, labels in batches for label in labels]

    assert order(1) == order(1)
    assert order(1) != order(2)
    unshuffled = make_tf_dataset(_tiny_dataset(), 10, seed=0, shuffle=False, with_labels=True)
    assert [int(label) for _, labels in unshuffled for label in labels] == list(range(10))


def test_make_tf_dataset_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="no labels"):
        make_tf_dataset(_tiny_dataset(labels=False), 2, seed=0, with_labels=True)
    with pytest.raises(ValueError, match="drop_remainder=False"):
        make_tf_dataset(_tiny_dataset(), 11, seed=0)


def test_image_dataset_properties_and_validation() -> None:
    dataset = _tiny_dataset()

    assert dataset.image_shape == (4, 4, 1) and len(dataset) == 10
    with pytest.raises(ValueError, match="float32"):
        ImageDataset("bad", np.zeros((2, 4, 4, 1), dtype=np.float64), None, None)
