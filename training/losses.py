"""The GAN losses and recipe terms: cross-entropy and hinge losses, the R1 penalty, and the mode-seeking ratio."""

from __future__ import annotations

import keras
import tensorflow as tf

from training.options import (
    check_loss,
)

# Keeps the mode-seeking term finite when two halves' images coincide (as in Mao et al.'s code).
MODE_SEEKING_EPSILON = 1e-5


def r1_penalty(
    discriminator: keras.Model, real_images: tf.Tensor, condition: tf.Tensor | None = None
) -> tf.Tensor:
    """R1: the batch mean of the squared norm of the discriminator's gradient with respect to real images."""
    real_images = tf.convert_to_tensor(real_images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(real_images)
        # Each image's logit depends on that image alone, so the gradient of the sum holds every image's own.
        total = tf.reduce_sum(
            tf.cast(discriminator(conditioned(real_images, condition), training=True), tf.float32)
        )
    gradients = tape.gradient(total, real_images)
    return tf.reduce_mean(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]))


def paired_halves(condition: tf.Tensor) -> tf.Tensor:
    """`condition` with its second half replaced by its first: row ``i`` and row ``h + i`` share a class
    (``h = rows // 2``; an odd last row keeps its own class)."""
    rows = tf.shape(condition)[0]
    half = rows // 2
    return tf.concat([condition[:half], condition[:half], condition[2 * half :]], axis=0)


def mode_seeking_ratio(images: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    """``mean|I1 - I2| / mean|z1 - z2|`` between a batch's first and second halves (Mao et al. 2019)."""
    half = tf.shape(z)[0] // 2
    images = tf.cast(images, tf.float32)
    z = tf.cast(z, tf.float32)
    image_distance = tf.reduce_mean(tf.abs(images[:half] - images[half : 2 * half]))
    latent_distance = tf.reduce_mean(tf.abs(z[:half] - z[half : 2 * half]))
    return image_distance / latent_distance


def discriminator_loss(
    real_logits: tf.Tensor, fake_logits: tf.Tensor, *, loss: str = "bce", label_smoothing: float = 0.0
) -> tf.Tensor:
    """The discriminator's loss on a batch: real images should score high, generated ones low.

    ``"bce"``: cross-entropy with target ``1 - label_smoothing`` for real and 0 for generated images.
    ``"hinge"``: ``mean(relu(1 - real)) + mean(relu(1 + fake))``, which stops pushing a logit once it
    is past the margin of 1.
    """
    check_loss(loss, label_smoothing)
    if loss == "hinge":
        return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))
    real_targets = tf.ones_like(real_logits) * (1.0 - label_smoothing)
    return _cross_entropy(real_targets, real_logits) + _cross_entropy(tf.zeros_like(fake_logits), fake_logits)


def generator_loss(fake_logits: tf.Tensor, *, loss: str = "bce") -> tf.Tensor:
    """The generator's loss on its images' logits: the non-saturating cross-entropy, or ``-mean(fake)``."""
    check_loss(loss, 0.0)
    if loss == "hinge":
        return -tf.reduce_mean(fake_logits)
    return _cross_entropy(tf.ones_like(fake_logits), fake_logits)


def _cross_entropy(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))


def conditioned(tensor: tf.Tensor, condition: tf.Tensor | None) -> tf.Tensor | list[tf.Tensor]:
    """A network's input: the tensor alone, or with the class labels as second input."""
    return tensor if condition is None else [tensor, condition]
