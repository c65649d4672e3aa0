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

The recipe options, each off by default:

- ``loss="hinge"``: the hinge loss of SAGAN/BigGAN instead of cross-entropy (`discriminator_loss`,
  `generator_loss`). With cross-entropy, ``label_smoothing=s`` makes the discriminator's target for real
  images ``1 - s`` (one-sided, Salimans et al. 2016), so it is never rewarded for ever larger real logits.
- ``diffaugment=("translation", "cutout")`` (any of color, translation, cutout): DiffAugment (Zhao et al.
  2020, `training.diffaugment`) on real and generated images alike before every discriminator call.
- ``spectral_norm=True`` in the discriminator builders: every convolution and dense layer of the
  discriminator is wrapped in `keras.layers.SpectralNormalization` (Miyato et al. 2018), which rescales its
  kernel to spectral norm 1 at each training call and so bounds the discriminator's Lipschitz constant.
- ``r1_gamma=g``: the R1 penalty of Mescheder et al. (2018), ``g/2 * E|grad_x D(x)|^2`` on real images, which
  keeps the discriminator flat on the data so training converges instead of oscillating. It is lazy as in
  StyleGAN2 (Karras et al. 2020): computed only every ``r1_interval`` discriminator steps and weighted by
  ``r1_interval`` then, which costs a fraction of the double backward pass and works as well.
- ``width=w`` in the discriminator builders multiplies its filter counts: a stronger critic for the generator.
- ``mode_seeking=w``: the mode-seeking term of Mao et al. (2019) in the generator's loss,
  ``w / (mean|G(z1) - G(z2)| / mean|z1 - z2| + eps)`` over the two halves of a batch, which rewards images that
  differ as much as their latents do and so counters a generator that ignores its latent. A conditional model
  draws each pair of generated images for one class (the second half of the batch repeats the first half's
  labels), so the term works within classes, where a conditional generator collapses first.

Both builders take a Keras dtype policy for their hidden layers: ``"mixed_bfloat16"`` computes in bfloat16
(markedly faster on CPUs with bfloat16 instructions) while weights, the generator's images and the
discriminator's logits, and so the losses, stay float32.

Under a `tf.distribute` strategy (`training.distribute`) the step draws latents for the global batch and keeps
its replica's rows, scales its losses to the global batch, averages the generator's batch-norm statistics
over the replicas, and updates the weight average on every device copy alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from genserve.conventions import check_channels
from training.diffaugment import diff_augment
from training.distribute import assign_in_sync, average_across_replicas, replica_rows, scale_to_global_batch
from training.options import (
    DEFAULT_EMA_DECAY,
    SUPPORTED_IMAGE_SIZES,
    check_d_width,
    check_diffaugment_policies,
    check_ema_decay,
    check_loss,
    check_mode_seeking,
    check_r1,
)

_PROJECTION_FILTERS = 256
# Keeps the mode-seeking term finite when two halves' images coincide (as in Mao et al.'s code).
_MODE_SEEKING_EPSILON = 1e-5
_REFINE_FILTERS = 128
# Sizes the tutorial's layout reaches with two upsampling stages (from a 7x7 or 8x8 base); 64 adds a third.
_TWO_STAGE_SIZES = (28, 32)
# The tutorial uses LeakyReLU with Keras' default slope.
_LEAKY_SLOPE = 0.3
_DROPOUT_RATE = 0.3
_KERNEL_SIZE = 5
# Below this many updates the average warms up with a smaller decay, as tf.train.ExponentialMovingAverage
# does with num_updates, so short runs are not dominated by the random initial weights.
_EMA_WARMUP_OFFSET = 10.0


def _upsampling_filters(image_size: int) -> list[int]:
    """Filters of the stride-2 stages before the output stage (which has one filter per channel)."""
    return [64] if image_size in _TWO_STAGE_SIZES else [128, 64]


def check_latent_dim(latent_dim: int) -> int:
    """Return `latent_dim` if it is a usable latent size, else raise ValueError."""
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
    return latent_dim


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
    return height, width, check_channels(channels)


def build_generator(
    latent_dim: int,
    image_shape: tuple[int, int, int],
    name: str = "generator",
    dtype_policy: str = "float32",
) -> keras.Model:
    """Latent vectors ``[N, latent_dim]`` to images ``[N, H, W, C]`` in [-1, 1].

    `dtype_policy` applies to the hidden layers (e.g. ``"mixed_bfloat16"``); the output layer stays float32.
    """
    check_latent_dim(latent_dim)
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
        *_transpose_block(_REFINE_FILTERS, strides=1, name="refine", dtype_policy=dtype_policy),
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
    image_shape: tuple[int, int, int],
    name: str = "discriminator",
    dtype_policy: str = "float32",
    spectral_norm: bool = False,
    width: float = 1.0,
) -> keras.Model:
    """Images ``[N, H, W, C]`` in [-1, 1] to one real-vs-fake logit each, ``[N, 1]``.

    `dtype_policy` applies to the hidden layers; the logit layer stays float32 so the loss is computed in it.
    `spectral_norm` wraps the convolutions and the logit layer in `keras.layers.SpectralNormalization`;
    `width` multiplies the convolutions' filter counts.
    """
    size, _, _ = check_image_shape(image_shape)
    layers = discriminator_layers(size, dtype_policy, spectral_norm=spectral_norm, width=width)
    return keras.Sequential([keras.Input(shape=tuple(image_shape), name="images"), *layers], name=name)


def discriminator_layers(
    image_size: int, dtype_policy: str = "float32", spectral_norm: bool = False, width: float = 1.0
) -> list[keras.layers.Layer]:
    """The discriminator's layers from an image-sized map (any number of channels) to one logit."""
    return [
        *discriminator_feature_layers(image_size, dtype_policy, spectral_norm=spectral_norm, width=width),
        logit_layer(spectral_norm),
    ]


def logit_layer(spectral_norm: bool = False) -> keras.layers.Layer:
    """The discriminator's float32 dense layer from its features to one logit."""
    dense = keras.layers.Dense(1, name="logit", dtype="float32")
    return _spectrally_normalized(dense) if spectral_norm else dense


def discriminator_feature_layers(
    image_size: int, dtype_policy: str = "float32", spectral_norm: bool = False, width: float = 1.0
) -> list[keras.layers.Layer]:
    """The discriminator's layers from an image-sized map to its flat feature vector (before the logit)."""
    check_d_width(width)
    base = [64, 128] if image_size in _TWO_STAGE_SIZES else [64, 128, 256]
    filters = [max(1, round(count * width)) for count in base]
    hidden = {"dtype": dtype_policy}
    weighted = _spectrally_normalized if spectral_norm else _unchanged
    layers: list[keras.layers.Layer] = []
    for index, count in enumerate(filters, start=1):
        conv = keras.layers.Conv2D(
            count, _KERNEL_SIZE, strides=2, padding="same", name=f"down{index}_conv", **hidden
        )
        layers += [
            weighted(conv),
            keras.layers.LeakyReLU(_LEAKY_SLOPE, name=f"down{index}_act", **hidden),
            keras.layers.Dropout(_DROPOUT_RATE, name=f"down{index}_dropout", **hidden),
        ]
    layers.append(keras.layers.Flatten(name="flatten", **hidden))
    return layers


def _unchanged(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer


def _spectrally_normalized(layer: keras.layers.Layer) -> keras.layers.Layer:
    # The wrapper itself runs in float32 so that it normalises the float32 kernel: under a mixed policy it
    # would read a bfloat16 copy and write that back, rounding the weights to bfloat16 at every step. The
    # wrapped layer still computes in its own policy's dtype.
    return keras.layers.SpectralNormalization(layer, name=f"{layer.name}_sn", dtype="float32")


class DCGAN(keras.Model):
    """A generator and a discriminator trained against each other, plus an averaged generator copy."""

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        latent_dim: int,
        ema_decay: float = DEFAULT_EMA_DECAY,
        seed: int | None = None,
        loss: str = "bce",
        label_smoothing: float = 0.0,
        diffaugment: Sequence[str] = (),
        r1_gamma: float = 0.0,
        r1_interval: int = 16,
        mode_seeking: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_ema_decay(ema_decay)
        check_loss(loss, label_smoothing)
        check_r1(r1_gamma, r1_interval)
        self.r1_gamma = r1_gamma
        self.r1_interval = r1_interval
        self.mode_seeking = check_mode_seeking(mode_seeking)
        self.loss_name = loss
        self.label_smoothing = label_smoothing
        self.diffaugment = check_diffaugment_policies(diffaugment)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.ema_decay = ema_decay
        self.ema_generator: keras.Model | None = None
        if ema_decay > 0.0:
            self.ema_generator = keras.models.clone_model(generator)
            self.ema_generator.set_weights(generator.get_weights())
        # Latents and DiffAugment's draws share this generator: checkpoints hold its state, so a resumed
        # run carries on with the same noise and the same augmentations.
        self.noise_seed = keras.random.SeedGenerator(seed, name="noise_seed")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.r1_tracker = keras.metrics.Mean(name="r1")
        self.mode_seeking_tracker = keras.metrics.Mean(name="ms_ratio")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        trackers = [self.d_loss_tracker, self.g_loss_tracker]
        if self.r1_gamma > 0:
            trackers.append(self.r1_tracker)
        if self.mode_seeking > 0:
            trackers.append(self.mode_seeking_tracker)
        return trackers

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
        z = replica_rows(self._latents, tf.shape(real_images)[0])
        # Mode seeking compares the batch's two halves, so a conditional model draws both halves' images
        # for the same classes.
        fake_condition = (
            paired_halves(condition) if self.mode_seeking > 0 and condition is not None else condition
        )
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake_images = self.generator(_conditioned(z, fake_condition), training=True)
            # One discriminator pass on the fakes serves both losses, so both see the same augmentation.
            real_logits = self._discriminate(real_images, condition)
            fake_logits = self._discriminate(fake_images, fake_condition)
            d_loss = discriminator_loss(
                real_logits, fake_logits, loss=self.loss_name, label_smoothing=self.label_smoothing
            )
            g_loss = generator_loss(fake_logits, loss=self.loss_name)
            # Each replica's share of the global batch's losses (the R1 and mode-seeking terms included).
            d_share = scale_to_global_batch(d_loss + self._lazy_r1(real_images, condition))
            g_share = scale_to_global_batch(g_loss + self._mode_seeking_term(fake_images, z))
        g_weights = self.generator.trainable_variables
        d_weights = self.discriminator.trainable_variables
        d_gradients = d_tape.gradient(d_share, d_weights)
        g_gradients = g_tape.gradient(g_share, g_weights)
        self.g_optimizer.apply_gradients(zip(g_gradients, g_weights, strict=True))
        self.d_optimizer.apply_gradients(zip(d_gradients, d_weights, strict=True))
        average_across_replicas(self.generator.non_trainable_weights)
        self._update_ema()
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {metric.name: metric.result() for metric in self.metrics}

    def _latents(self, rows: tf.Tensor) -> tf.Tensor:
        return keras.random.normal((rows, self.latent_dim), seed=self.noise_seed)

    def _lazy_r1(self, real_images: tf.Tensor, condition: tf.Tensor | None) -> tf.Tensor:
        """The R1 term of this step's discriminator loss: ``gamma/2 * interval * R1`` every `r1_interval`
        discriminator steps, 0 on the others (and always 0 without R1)."""
        if self.r1_gamma <= 0:
            return tf.zeros(())
        if self.diffaugment:
            real_images = diff_augment(real_images, self.diffaugment, self.noise_seed)
        due = tf.equal(self.d_optimizer.iterations % self.r1_interval, 0)
        penalty = tf.cond(
            due, lambda: r1_penalty(self.discriminator, real_images, condition), lambda: tf.zeros(())
        )
        self.r1_tracker.update_state(penalty, sample_weight=tf.cast(due, tf.float32))
        return 0.5 * self.r1_gamma * self.r1_interval * penalty

    def _mode_seeking_term(self, fake_images: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        """``mode_seeking / (ratio + eps)`` of this step's images and latents (0 when it is off)."""
        if self.mode_seeking <= 0:
            return tf.zeros(())
        ratio = mode_seeking_ratio(fake_images, z)
        self.mode_seeking_tracker.update_state(ratio)
        return self.mode_seeking / (ratio + _MODE_SEEKING_EPSILON)

    def _discriminate(self, images: tf.Tensor, condition: tf.Tensor | None) -> tf.Tensor:
        if self.diffaugment:
            images = diff_augment(images, self.diffaugment, self.noise_seed)
        return self.discriminator(_conditioned(images, condition), training=True)

    def _update_ema(self) -> None:
        if self.ema_generator is None:
            return
        trainable = {id(weight) for weight in self.generator.trainable_weights}
        pairs = list(zip(self.ema_generator.weights, self.generator.weights, strict=True))
        assign_in_sync([pair for pair in pairs if id(pair[1]) in trainable], self._blend)
        # Batch-norm moving statistics are already averages: copy them as they are.
        assign_in_sync([pair for pair in pairs if id(pair[1]) not in trainable], _copy)

    def _blend(self, average: Any, weight: Any) -> Any:
        updates = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + updates) / (_EMA_WARMUP_OFFSET + updates))
        return average.assign(decay * average + (1.0 - decay) * weight)


def _copy(target: Any, source: Any) -> Any:
    return target.assign(source)


def r1_penalty(
    discriminator: keras.Model, real_images: tf.Tensor, condition: tf.Tensor | None = None
) -> tf.Tensor:
    """R1: the batch mean of the squared norm of the discriminator's gradient with respect to real images."""
    real_images = tf.convert_to_tensor(real_images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(real_images)
        # Each image's logit depends on that image alone, so the gradient of the sum holds every image's own.
        total = tf.reduce_sum(
            tf.cast(discriminator(_conditioned(real_images, condition), training=True), tf.float32)
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


def _conditioned(tensor: tf.Tensor, condition: tf.Tensor | None) -> tf.Tensor | list[tf.Tensor]:
    """A network's input: the tensor alone, or with the class labels as second input."""
    return tensor if condition is None else [tensor, condition]


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
