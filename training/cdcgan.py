"""A class-conditional DCGAN: the DCGAN's networks, each told which class an image is meant to be.

The generator looks the class up in a learned embedding and appends it to the latent vector before the
DCGAN's projection, so every later layer sees both. The discriminator learns the class in one of two ways:

- ``conditioning="concat"``: the class becomes a learned image-sized map stacked onto the image as one more
  channel, so the first convolution can already compare the picture with the class it claims to be.
- ``conditioning="projection"`` (Miyato & Koyama 2018): the DCGAN's conv stack sees the image alone, and the
  logit gains the inner product of a learned class embedding with its features, ``psi(phi(x)) + e_y . phi(x)``.
  The class term is then part of the real-vs-fake judgement itself, so a digit drawn as the wrong class is
  penalised directly; this is what lifts the share of images of the requested class.

Everything else is the DCGAN's own conv stack, and `ConditionalDCGAN` trains the pair with the DCGAN's loop
and weight averaging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.dcgan import DCGAN
from training.networks import (
    check_image_shape,
    check_latent_dim,
    discriminator_feature_layers,
    discriminator_layers,
    generator_layers,
    logit_layer,
)
from training.options import CONDITIONINGS

LABEL_EMBEDDING_DIM = 32
LABEL_EMBEDDING_LAYER = "label_embedding"
_JOIN_LAYER = "z_and_label"
_SQRT_2 = 2.0**0.5
# Keeps a redrawn coordinate finite (|z| < 7) where the CDF rounds to 0 or 1.
_CDF_EPSILON = 1e-12


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
    width: float = 1.0,
    conditioning: str = "concat",
) -> keras.Model:
    """``(images [N, H, W, C], label int32 [N])`` to one real-vs-fake logit each, ``[N, 1]``.

    `spectral_norm` normalises the DCGAN layers, and `width` scales them, as in `build_discriminator`;
    `conditioning` is "concat" (label map as an extra channel) or "projection" (class embedding . features).
    """
    height, _, channels = check_image_shape(image_shape)
    _check_num_classes(num_classes)
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning {conditioning!r}: choose one of {', '.join(CONDITIONINGS)}")
    images = keras.Input(shape=(height, height, channels), name="images")
    label = keras.Input(shape=(), dtype="int32", name="label")
    options: dict[str, Any] = {"spectral_norm": spectral_norm, "width": width}
    if conditioning == "projection":
        logit = _projection_head(images, label, num_classes, dtype_policy, **options)
        return keras.Model([images, label], logit, name=name)
    label_map = keras.layers.Embedding(num_classes, height * height, name="label_map")(label)
    label_map = keras.layers.Reshape((height, height, 1), name="label_map_reshape")(label_map)
    x = keras.layers.Concatenate(name="image_and_label", dtype=dtype_policy)([images, label_map])
    for layer in discriminator_layers(height, dtype_policy, **options):
        x = layer(x)
    return keras.Model([images, label], x, name=name)


def _projection_head(
    images: keras.KerasTensor,
    label: keras.KerasTensor,
    num_classes: int,
    dtype_policy: str,
    *,
    spectral_norm: bool,
    width: float,
) -> keras.KerasTensor:
    """``psi(phi(x)) + e_y . phi(x)``: the unconditional logit plus the class embedding's projection."""
    features = images
    for layer in discriminator_feature_layers(
        int(images.shape[1]), dtype_policy, spectral_norm=spectral_norm, width=width
    ):
        features = layer(features)
    features = keras.layers.Activation("linear", name="features_float32", dtype="float32")(features)
    unconditional = logit_layer(spectral_norm)(features)
    embedded = keras.layers.Embedding(
        num_classes, int(features.shape[-1]), name="class_projection", dtype="float32"
    )(label)
    projected = keras.layers.Dot(axes=1, name="projection", dtype="float32")([embedded, features])
    return keras.layers.Add(name="logit_and_projection", dtype="float32")([unconditional, projected])


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


def class_from_latent(
    z: tf.Tensor, num_classes: int, weights: Sequence[float] | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Split standard-normal latents into a class and standard-normal latents, for unconditional sampling.

    The first coordinate's normal CDF value ``u`` picks the class whose slice of (0, 1) holds it: slices of
    equal width (every class equally likely), or as wide as `weights` (each class as often as its weight, e.g.
    its share of the training images). Its position inside the slice goes back through the inverse CDF, so the
    returned latents are again N(0, I) and independent of the class. Returns ``(latents, label int32 [N])``.
    """
    z = tf.convert_to_tensor(z, tf.float32)
    first = tf.cast(z[:, :1], tf.float64)  # float64 keeps the redrawn coordinate's tails
    u = 0.5 * (1.0 + tf.math.erf(first / _SQRT_2))
    if weights is None:
        scaled = u * float(num_classes)
        label = tf.minimum(tf.floor(scaled), float(num_classes - 1))
        within = scaled - label
    else:
        shares = np.asarray(weights, np.float64) / float(np.sum(weights))
        edges = tf.constant(np.concatenate([[0.0], np.cumsum(shares)[:-1]]), tf.float64)
        index = tf.searchsorted(edges[1:], u[:, 0], side="right")
        label = tf.cast(index, tf.float64)[:, None]
        within = (u - tf.gather(edges, index)[:, None]) / tf.gather(tf.constant(shares), index)[:, None]
    within = tf.clip_by_value(within, _CDF_EPSILON, 1.0 - _CDF_EPSILON)
    redrawn = tf.cast(_SQRT_2 * tf.math.erfinv(2.0 * within - 1.0), tf.float32)
    return tf.concat([redrawn, z[:, 1:]], axis=1), tf.cast(label[:, 0], tf.int32)


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
