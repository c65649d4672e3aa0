"""A class-conditional DCGAN: the DCGAN's networks, each told which class an image is meant to be.

The generator looks the class up in a learned embedding and appends it to the latent vector before the
DCGAN's projection, so every later layer sees both. The discriminator turns the class into a learned
image-sized map and stacks it onto the image as one more channel, so its first convolution can already
compare the picture with the class it claims to be. Everything after these inputs is the DCGAN's own
conv stack, and `ConditionalDCGAN` trains the pair with the DCGAN's loop and weight averaging.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from training.dcgan import (
    DCGAN,
    check_image_shape,
    check_latent_dim,
    discriminator_layers,
    generator_layers,
)

LABEL_EMBEDDING_DIM = 32
LABEL_EMBEDDING_LAYER = "label_embedding"
_JOIN_LAYER = "z_and_label"


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"a conditional model needs at least 2 classes, got {num_classes}")


def build_conditional_generator(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    num_classes: int,
    name: str = "generator",
    dtype_policy: str = "float32",
) -> keras.Model:
    """``(z [N, latent_dim], label int32 [N])`` to images ``[N, H, W, C]`` in [-1, 1]."""
    check_latent_dim(latent_dim)
    _check_num_classes(num_classes)
    z = keras.Input(shape=(latent_dim,), name="z")
    label = keras.Input(shape=(), dtype="int32", name="label")
    embedded = keras.layers.Embedding(num_classes, LABEL_EMBEDDING_DIM, name=LABEL_EMBEDDING_LAYER)(label)
    x = keras.layers.Concatenate(name=_JOIN_LAYER, dtype=dtype_policy)([z, embedded])
    for layer in generator_layers(image_shape, dtype_policy):
        x = layer(x)
    return keras.Model([z, label], x, name=name)


def build_conditional_discriminator(
    image_shape: tuple[int, int, int],
    num_classes: int,
    name: str = "discriminator",
    dtype_policy: str = "float32",
    spectral_norm: bool = False,
) -> keras.Model:
    """``(images [N, H, W, C], label int32 [N])`` to one real-vs-fake logit each, ``[N, 1]``.

    `spectral_norm` normalises the DCGAN layers after the label map, as `build_discriminator` does.
    """
    height, width, channels = check_image_shape(image_shape)
    _check_num_classes(num_classes)
    images = keras.Input(shape=(height, width, channels), name="images")
    label = keras.Input(shape=(), dtype="int32", name="label")
    label_map = keras.layers.Embedding(num_classes, height * width, name="label_map")(label)
    label_map = keras.layers.Reshape((height, width, 1), name="label_map_reshape")(label_map)
    x = keras.layers.Concatenate(name="image_and_label", dtype=dtype_policy)([images, label_map])
    for layer in discriminator_layers(height, dtype_policy, spectral_norm=spectral_norm):
        x = layer(x)
    return keras.Model([images, label], x, name=name)


def embedding_generator(generator: keras.Model) -> keras.Model:
    """The part of a conditional generator after its label lookup: ``(z, label_embedding)`` to images.

    It shares the generator's weights; feeding it a blend of two classes' embeddings draws something
    between the two classes.
    """
    latent_dim = int(generator.get_layer("z").output.shape[-1])
    z = keras.Input(shape=(latent_dim,), name="z")
    embedded = keras.Input(shape=(LABEL_EMBEDDING_DIM,), name="label_embedding")
    joined = generator.get_layer(_JOIN_LAYER)
    x = joined([z, embedded])
    body = generator.layers[generator.layers.index(joined) + 1 :]
    for layer in body:
        x = layer(x)
    return keras.Model([z, embedded], x, name=f"{generator.name}_from_embedding")


def label_embedding_table(generator: keras.Model) -> tf.Tensor:
    """The conditional generator's class embeddings, float32 ``[num_classes, LABEL_EMBEDDING_DIM]``."""
    return tf.cast(generator.get_layer(LABEL_EMBEDDING_LAYER).embeddings, tf.float32)


class ConditionalDCGAN(DCGAN):
    """A DCGAN trained on ``(images, labels)`` batches; both networks see each image's class."""

    def __init__(
        self, generator: keras.Model, discriminator: keras.Model, *, num_classes: int, **kwargs: Any
    ) -> None:
        _check_num_classes(num_classes)
        super().__init__(generator, discriminator, **kwargs)
        self.num_classes = num_classes

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        z, labels = inputs
        generator = self.ema_generator if self.ema_generator is not None else self.generator
        return generator([z, labels], training=training)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        labels = data[1] if isinstance(data, tuple) and len(data) > 1 else None
        if labels is None:
            raise ValueError(
                "a conditional DCGAN trains on (images, labels) batches: build the dataset with "
                "make_tf_dataset(..., with_labels=True)"
            )
        return self._adversarial_step(data[0], condition=tf.cast(labels, tf.int32))
