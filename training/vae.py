"""A convolutional variational autoencoder for 28, 32, 64 or 128 pixel images with 1 or 3 channels.

The encoder halves the resolution with stride-2 convolutions and predicts the mean and log-variance of a
diagonal Gaussian over the latent space; the decoder mirrors it with stride-2 transposed convolutions. The
decoder produces per-pixel Bernoulli logits for training (binary cross-entropy against pixels in [0, 1],
summed over the image, plus the KL divergence from the standard normal prior, weighted by `kl_weight`).

For serving, `build_decoder` ends in ``tanh(logits / 2)``, which equals ``2 * sigmoid(logits) - 1``: the
Bernoulli mean on the same [-1, 1] scale a DCGAN generator outputs, so the decoder is exported and served
exactly like a GAN generator. `logits_model` gives the training view of the same layers.

Under a `tf.distribute` strategy the step scales its loss (reconstruction and KL alike) to the global batch and
draws the noise of its own rows of the global batch (`training.distribute`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.networks import check_image_shape, check_latent_dim
from training.options import check_kl_weight
from training.replica_step import replica_rows, scale_to_global_batch

_KERNEL_SIZE = 3
_HIDDEN_UNITS = 256
LOGITS_LAYER = "to_logits"
# Log-variances are clipped before exponentiating so a bad step cannot overflow the KL term.
_LOG_VAR_RANGE = (-20.0, 10.0)


def _conv_filters(image_size: int) -> list[int]:
    """Filters of the encoder's stride-2 convolutions (the decoder uses them in reverse)."""
    return [32, 64] if image_size in (28, 32) else [32, 64, 128]


def _strided(
    layer: type[keras.layers.Layer], x: Any, filters: list[int], prefix: str, dtype_policy: str
) -> Any:
    """Stride-2 ReLU convolutions (`Conv2D` halves the resolution, `Conv2DTranspose` doubles it), one per
    filter count, named prefix1, prefix2, ..."""
    for index, count in enumerate(filters, start=1):
        x = layer(
            count,
            _KERNEL_SIZE,
            strides=2,
            padding="same",
            activation="relu",
            name=f"{prefix}{index}",
            dtype=dtype_policy,
        )(x)
    return x


def build_encoder(
    image_shape: tuple[int, int, int],
    latent_dim: int,
    name: str = "encoder",
    dtype_policy: str = "float32",
) -> keras.Model:
    """Images ``[N, H, W, C]`` in [-1, 1] to ``(z_mean, z_log_var)``, each float32 ``[N, latent_dim]``."""
    check_latent_dim(latent_dim)
    size, _, _ = check_image_shape(image_shape)
    images = keras.Input(shape=tuple(image_shape), name="images")
    x = _strided(keras.layers.Conv2D, images, _conv_filters(size), "down", dtype_policy)
    x = keras.layers.Flatten(name="flatten", dtype=dtype_policy)(x)
    x = keras.layers.Dense(_HIDDEN_UNITS, activation="relu", name="hidden", dtype=dtype_policy)(x)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model(images, [z_mean, z_log_var], name=name)


def build_decoder(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    name: str = "generator",
    dtype_policy: str = "float32",
) -> keras.Model:
    """Latent vectors ``[N, latent_dim]`` to images ``[N, H, W, C]`` in [-1, 1] (the Bernoulli means)."""
    check_latent_dim(latent_dim)
    size, _, channels = check_image_shape(image_shape)
    filters = list(reversed(_conv_filters(size)))
    base = size // 2 ** len(filters)
    z = keras.Input(shape=(latent_dim,), name="z")
    x = keras.layers.Dense(_HIDDEN_UNITS, activation="relu", name="hidden", dtype=dtype_policy)(z)
    x = keras.layers.Dense(base * base * filters[0], activation="relu", name="project", dtype=dtype_policy)(x)
    x = keras.layers.Reshape((base, base, filters[0]), name="reshape", dtype=dtype_policy)(x)
    x = _strided(keras.layers.Conv2DTranspose, x, filters, "up", dtype_policy)
    logits = keras.layers.Conv2DTranspose(
        channels, _KERNEL_SIZE, padding="same", name=LOGITS_LAYER, dtype="float32"
    )(x)
    half = keras.layers.Rescaling(0.5, name="half_logits", dtype="float32")(logits)
    images = keras.layers.Activation("tanh", name="to_image", dtype="float32")(half)
    return keras.Model(z, images, name=name)


def logits_model(decoder: keras.Model) -> keras.Model:
    """The decoder's layers up to the per-pixel logits, sharing its weights (the training view)."""
    return keras.Model(
        decoder.inputs[0], decoder.get_layer(LOGITS_LAYER).output, name=f"{decoder.name}_logits"
    )


def encode_means(encoder: keras.Model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """float32 posterior means ``[N, latent_dim]`` of images in [-1, 1], encoded in batches."""
    means = [
        np.asarray(encoder(images[start : start + batch_size], training=False)[0], dtype=np.float32)
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(means)


def reconstruction_loss(targets01: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of pixels in [0, 1] against logits, summed per image, averaged over the batch."""
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets01, logits=logits)
    return tf.reduce_mean(tf.reduce_sum(per_pixel, axis=[1, 2, 3]))


def kl_divergence(z_mean: tf.Tensor, z_log_var: tf.Tensor) -> tf.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)), summed over latent dimensions, averaged over the batch."""
    per_dim = 1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var)
    return tf.reduce_mean(-0.5 * tf.reduce_sum(per_dim, axis=1))


class VAE(keras.Model):
    """An encoder and decoder trained together on the evidence lower bound (ELBO).

    `generator` is the decoder, the network that draws images from latents; the attribute names match
    `DCGAN` so sampling, checkpoints and export treat both kinds alike.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        latent_dim: int,
        kl_weight: float = 1.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_kl_weight(kl_weight)
        self.encoder = encoder
        self.generator = decoder
        self.ema_generator: keras.Model | None = None
        self.decoder_logits = logits_model(decoder)
        self.latent_dim = latent_dim
        self.kl_weight = kl_weight
        self.noise_seed = keras.random.SeedGenerator(seed, name="noise_seed")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def build_optimizers(self) -> None:
        """Create the optimizer slots now, so a checkpoint can be restored before the first step."""
        self.optimizer.build(self.encoder.trainable_variables + self.generator.trainable_variables)

    def encode(self, images: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        z_mean, z_log_var = self.encoder(images, training=training)
        return z_mean, tf.clip_by_value(z_log_var, *_LOG_VAR_RANGE)

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Reconstructions (from the posterior means) of images in [-1, 1]."""
        z_mean, _ = self.encode(images, training=training)
        return self.generator(z_mean, training=training)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        images = data[0] if isinstance(data, tuple) else data
        targets = (tf.cast(images, tf.float32) + 1.0) / 2.0
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encode(images, training=True)
            noise = replica_rows(self._noise, tf.shape(z_mean)[0])
            z = z_mean + tf.exp(0.5 * z_log_var) * noise
            logits = tf.cast(self.decoder_logits(z, training=True), tf.float32)
            reconstruction = reconstruction_loss(targets, logits)
            kl = kl_divergence(z_mean, z_log_var)
            loss = reconstruction + self.kl_weight * kl
            share = scale_to_global_batch(loss)  # this replica's share of the global batch's loss
        weights = self.encoder.trainable_variables + self.generator.trainable_variables
        gradients = tape.gradient(share, weights)
        self.optimizer.apply_gradients(zip(gradients, weights, strict=True))
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return {metric.name: metric.result() for metric in self.metrics}

    def _noise(self, rows: tf.Tensor) -> tf.Tensor:
        """Standard normal draws for the reparameterisation, one row per image."""
        return keras.random.normal((rows, self.latent_dim), seed=self.noise_seed)
