"""Images drawn from a published version's SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from genserve.store import IMAGES_OUTPUT, read_metadata
from tests.training.savedmodels import LATENT_DIM, module_metadata, publish_module
from training.sampling import generate_images


class _LabelPainter(tf.Module):
    """A conditional generator whose images are filled with their class number."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, LATENT_DIM], tf.float32, name="z"),
            tf.TensorSpec([None], tf.int32, name="label"),
        ]
    )
    def generate(self, z: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
        fill = tf.cast(label, tf.uint8)[:, None, None, None]
        return {IMAGES_OUTPUT: tf.tile(fill, [1, 4, 4, 1]) + tf.zeros_like(z[:, :1, None, None], tf.uint8)}


def test_conditional_models_get_every_class_in_turn(tmp_path: Path) -> None:
    metadata = module_metadata(
        "painter", "cdcgan", image_shape=(4, 4, 1), channels=1, class_names=["a", "b", "c"]
    )
    version = publish_module(tmp_path, _LabelPainter(), metadata)
    loaded = tf.saved_model.load(str(version))

    images = generate_images(loaded, read_metadata(version), 7, seed=0, batch_size=4)

    assert images.shape == (7, 4, 4, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0, 0, 0], [0, 1, 2, 0, 1, 2, 0])
