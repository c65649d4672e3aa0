"""The DCGAN of the TensorFlow tutorial, generalised to 1 or 3 channels and 28, 32, 64 or 128 pixels.

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

from training.diffaugment import diff_augment
from training.losses import (
    MODE_SEEKING_EPSILON,
    conditioned,
    discriminator_loss,
    generator_loss,
    mode_seeking_ratio,
    paired_halves,
    r1_penalty,
)
from training.options import (
    DEFAULT_EMA_DECAY,
    check_diffaugment_policies,
    check_ema_decay,
    check_loss,
    check_mode_seeking,
    check_r1,
)
from training.replica_step import assign_in_sync, average_across_replicas, replica_rows, scale_to_global_batch

# Below this many updates the average warms up with a smaller decay, as tf.train.ExponentialMovingAverage
# does with num_updates, so short runs are not dominated by the random initial weights.
_EMA_WARMUP_OFFSET = 10.0


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
            fake_images = self.generator(conditioned(z, fake_condition), training=True)
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
        return self.mode_seeking / (ratio + MODE_SEEKING_EPSILON)

    def _discriminate(self, images: tf.Tensor, condition: tf.Tensor | None) -> tf.Tensor:
        if self.diffaugment:
            images = diff_augment(images, self.diffaugment, self.noise_seed)
        return self.discriminator(conditioned(images, condition), training=True)

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
