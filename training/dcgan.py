"""The DCGAN of the TensorFlow tutorial, generalised to 1 or 3 channels and 28, 32 or 64 pixels.

The generator projects the latent vector onto a small ``base x base x 256`` map, refines it with a
stride-1 transposed convolution and then doubles the resolution with stride-2 transposed convolutions
until it reaches the image size. 28 and 32 pixel images use the tutorial's layout exactly (base 7 or 8, two
upsampling stages). 64 pixel images keep an 8x8 base and add a third upsampling stage rather than starting
from 16x16: the projection stays as small as the 32 pixel one and every stage still doubles the resolution.
The discriminator mirrors it: one stride-2 convolution per upsampling stage.

`DCGAN` trains both networks together as the tutorial does (one generator pass per step, binary
cross-entropy on logits) and keeps an exponential moving average of the generator's weights, which usually
gives cleaner samples than the raw weights at no extra training cost.

Both builders take a Keras dtype policy for their hidden layers: ``"mixed_bfloat16"`` computes in bfloat16
(markedly faster on CPUs with bfloat16 instructions) while weights, the generator's images and the
discriminator's logits, and so the losses, stay float32.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from training.config import SUPPORTED_CHANNELS, SUPPORTED_IMAGE_SIZES

_PROJECTION_FILTERS = 256
# The tutorial uses LeakyReLU with Keras' default slope.
_LEAKY_SLOPE = 0.3
_DROPOUT_RATE = 0.3
_KERNEL_SIZE = 5
# Below this many updates the average warms up with a smaller decay, as tf.train.ExponentialMovingAverage
# does with num_updates, so short runs are not dominated by the random initial weights.
_EMA_WARMUP_OFFSET = 10.0


def _upsampling_filters(image_size: int) -> list[int]:
    """Filters of the stride-2 stages before the output stage (which has one filter per channel)."""
    return [64] if image_size in (28, 32) else [128, 64]


def check_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Return `image_shape` if the DCGAN supports it, else raise ValueError saying what it supports."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (height, width, channels), got {image_shape!r}")
    height, width, channels = (int(size) for size in image_shape)
    if height != width or height not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(
            f"the DCGAN supports square images of {', '.join(map(str, SUPPORTED_IMAGE_SIZES))} pixels, got "
            f"{height}x{width}: resize the data with --image-size"
        )
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(
            f"the DCGAN supports 1 or 3 channels, got {channels}: convert the data with --channels"
        )
    return height, width, channels


def build_generator(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    name: str = "generator",
    dtype_policy: str = "float32",
) -> keras.Model:
    """Latent vectors ``[N, latent_dim]`` to images ``[N, H, W, C]`` in [-1, 1].

    `dtype_policy` applies to the hidden layers (e.g. ``"mixed_bfloat16"``); the output layer stays float32.
    """
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
    layers = generator_layers(image_shape, dtype_policy)
    return keras.Sequential([keras.Input(shape=(latent_dim,), name="z"), *layers], name=name)


def generator_layers(
    image_shape: tuple[int, int, int], dtype_policy: str = "float32"
) -> list[keras.layers.Layer]:
    """The generator's layers from its flat input vector to the image, for any model that feeds them."""
    size, _, channels = check_image_shape(image_shape)
    stages = _upsampling_filters(size)
    base = size // 2 ** (len(stages) + 1)
    hidden = {"dtype": dtype_policy}
    layers: list[keras.layers.Layer] = [
        keras.layers.Dense(base * base * _PROJECTION_FILTERS, use_bias=False, name="project", **hidden),
        keras.layers.BatchNormalization(name="project_bn", **hidden),
        keras.layers.LeakyReLU(_LEAKY_SLOPE, name="project_act", **hidden),
        keras.layers.Reshape((base, base, _PROJECTION_FILTERS), name="reshape", **hidden),
        *_transpose_block(128, strides=1, name="refine", dtype_policy=dtype_policy),
    ]
    for index, filters in enumerate(stages, start=1):
        layers += _transpose_block(filters, strides=2, name=f"up{index}", dtype_policy=dtype_policy)
    layers.append(
        keras.layers.Conv2DTranspose(
            channels,
            _KERNEL_SIZE,
            strides=2,
            padding="same",
            use_bias=False,
            activation="tanh",
            name="to_image",
            dtype="float32",
        )
    )
    return layers


def _transpose_block(filters: int, *, strides: int, name: str, dtype_policy: str) -> list[keras.layers.Layer]:
    return [
        keras.layers.Conv2DTranspose(
            filters,
            _KERNEL_SIZE,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"{name}_conv",
            dtype=dtype_policy,
        ),
        keras.layers.BatchNormalization(name=f"{name}_bn", dtype=dtype_policy),
        keras.layers.LeakyReLU(_LEAKY_SLOPE, name=f"{name}_act", dtype=dtype_policy),
    ]


def build_discriminator(
    image_shape: tuple[int, int, int], name: str = "discriminator", dtype_policy: str = "float32"
) -> keras.Model:
    """Images ``[N, H, W, C]`` in [-1, 1] to one real-vs-fake logit each, ``[N, 1]``.

    `dtype_policy` applies to the hidden layers; the logit layer stays float32 so the loss is computed in it.
    """
    size, _, _ = check_image_shape(image_shape)
    layers = discriminator_layers(size, dtype_policy)
    return keras.Sequential([keras.Input(shape=tuple(image_shape), name="images"), *layers], name=name)


def discriminator_layers(image_size: int, dtype_policy: str = "float32") -> list[keras.layers.Layer]:
    """The discriminator's layers from an image-sized map (any number of channels) to one logit."""
    filters = [64, 128] if image_size in (28, 32) else [64, 128, 256]
    hidden = {"dtype": dtype_policy}
    layers: list[keras.layers.Layer] = []
    for index, count in enumerate(filters, start=1):
        layers += [
            keras.layers.Conv2D(
                count, _KERNEL_SIZE, strides=2, padding="same", name=f"down{index}_conv", **hidden
            ),
            keras.layers.LeakyReLU(_LEAKY_SLOPE, name=f"down{index}_act", **hidden),
            keras.layers.Dropout(_DROPOUT_RATE, name=f"down{index}_dropout", **hidden),
        ]
    layers += [
        keras.layers.Flatten(name="flatten", **hidden),
        keras.layers.Dense(1, name="logit", dtype="float32"),
    ]
    return layers


class DCGAN(keras.Model):
    """A generator and a discriminator trained against each other, plus an averaged generator copy."""

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        latent_dim: int,
        ema_decay: float = 0.999,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}: use 0 to disable the average")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.ema_decay = ema_decay
        self.ema_generator: keras.Model | None = None
        if ema_decay > 0.0:
            self.ema_generator = keras.models.clone_model(generator)
            self.ema_generator.set_weights(generator.get_weights())
        self.noise_seed = keras.random.SeedGenerator(seed, name="noise_seed")
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(
        self, g_optimizer: keras.optimizers.Optimizer, d_optimizer: keras.optimizers.Optimizer, **kwargs: Any
    ) -> None:
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def build_optimizers(self) -> None:
        """Create the optimizer slots now, so a checkpoint can be restored before the first step."""
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def call(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        generator = self.ema_generator if self.ema_generator is not None else self.generator
        return generator(z, training=training)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        real_images = data[0] if isinstance(data, tuple) else data
        return self._adversarial_step(real_images, condition=None)

    def _adversarial_step(self, real_images: tf.Tensor, condition: tf.Tensor | None) -> dict[str, tf.Tensor]:
        """One generator and one discriminator update; `condition` (class labels) goes to both networks."""
        batch_size = tf.shape(real_images)[0]
        z = keras.random.normal((batch_size, self.latent_dim), seed=self.noise_seed)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake_images = self.generator(_conditioned(z, condition), training=True)
            real_logits = self.discriminator(_conditioned(real_images, condition), training=True)
            fake_logits = self.discriminator(_conditioned(fake_images, condition), training=True)
            d_loss = self.loss_fn(tf.ones_like(real_logits), real_logits) + self.loss_fn(
                tf.zeros_like(fake_logits), fake_logits
            )
            g_loss = self.loss_fn(tf.ones_like(fake_logits), fake_logits)
        g_weights = self.generator.trainable_variables
        d_weights = self.discriminator.trainable_variables
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_weights), g_weights, strict=True))
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_weights), d_weights, strict=True))
        self._update_ema()
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {metric.name: metric.result() for metric in self.metrics}

    def _update_ema(self) -> None:
        if self.ema_generator is None:
            return
        updates = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + updates) / (_EMA_WARMUP_OFFSET + updates))
        trainable = {id(weight) for weight in self.generator.trainable_weights}
        for average, weight in zip(self.ema_generator.weights, self.generator.weights, strict=True):
            if id(weight) in trainable:
                average.assign(decay * average + (1.0 - decay) * weight)
            else:
                # Batch-norm moving statistics are already averages: copy them as they are.
                average.assign(weight)


def _conditioned(tensor: tf.Tensor, condition: tf.Tensor | None) -> tf.Tensor | list[tf.Tensor]:
    """A network's input: the tensor alone, or with the class labels as second input."""
    return tensor if condition is None else [tensor, condition]
