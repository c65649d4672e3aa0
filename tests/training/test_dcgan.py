from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.dcgan import DCGAN
from training.losses import mode_seeking_ratio, paired_halves, r1_penalty
from training.networks import build_discriminator, build_generator

LATENT_DIM = 16


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_builders_map_latents_to_images_and_images_to_one_logit(size: int, channels: int) -> None:
    generator = build_generator(LATENT_DIM, (size, size, channels))
    discriminator = build_discriminator((size, size, channels))

    images = np.asarray(generator(np.random.RandomState(0).randn(2, LATENT_DIM), training=False))
    logits = np.asarray(discriminator(images, training=False))

    assert generator.name == "generator" and discriminator.name == "discriminator"
    assert images.shape == (2, size, size, channels)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert logits.shape == (2, 1)


def test_28_pixel_generator_matches_the_tutorial_layout() -> None:
    generator = build_generator(100, (28, 28, 1))

    shapes = [tuple(layer.output.shape[1:]) for layer in generator.layers if "conv" in layer.name]

    assert generator.get_layer("project").output.shape[-1] == 7 * 7 * 256
    assert shapes == [(7, 7, 128), (14, 14, 64)]


def _uniform_weights(generator: keras.Model) -> None:
    """Every weight of the generator's convolutions and projection set to one small constant (its batch
    normalisation left at its initial identity), so that what its layout alone does to a flat map shows."""
    for layer in generator.layers:
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2DTranspose):
            layer.kernel.assign(np.full(layer.kernel.shape, 1e-3, dtype="float32"))


@pytest.mark.parametrize(("size", "checkered"), [(128, False), (64, True), (28, True)])
def test_spectrogram_generator_leaves_no_checkerboard_where_the_image_ones_do(
    size: int, checkered: bool
) -> None:
    # Kernel 4 with stride 2 gives every output pixel the same number of taps (the spectrogram layout); kernel 5
    # gives alternate pixels three and two (the images'). From one flat input the former draws a smooth map
    # (neighbours differ about half as much as pixels two apart), the latter one whose neighbours alternate.
    generator = build_generator(LATENT_DIM, (size, size, 1))
    _uniform_weights(generator)

    image = np.asarray(generator(np.ones((1, LATENT_DIM), dtype="float32"), training=False))[0, :, :, 0]
    neighbours = np.abs(np.diff(image, axis=0)).mean()
    two_apart = np.abs(image[2:] - image[:-2]).mean()

    assert two_apart > 0
    assert (neighbours / two_apart > 2) == checkered, neighbours / two_apart
    assert (neighbours / two_apart < 1) == (not checkered), neighbours / two_apart


@pytest.mark.parametrize("image_shape", [(48, 48, 1), (28, 32, 1), (16, 16, 3), (28, 28, 2), (28, 28)])
def test_unsupported_image_shapes_are_rejected_with_a_hint(image_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="image_shape|pixels|channels"):
        build_generator(LATENT_DIM, image_shape)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_shape|pixels|channels"):
        build_discriminator(image_shape)  # type: ignore[arg-type]


def test_zero_latent_dim_is_rejected() -> None:
    with pytest.raises(ValueError, match="latent_dim"):
        build_generator(0, (28, 28, 1))


def _tiny_gan(ema_decay: float, learning_rate: float = 1e-2, **options: Any) -> DCGAN:
    gan = DCGAN(
        build_generator(4, (28, 28, 1)),
        build_discriminator((28, 28, 1)),
        latent_dim=4,
        ema_decay=ema_decay,
        seed=0,
        **options,
    )
    gan.compile(
        g_optimizer=keras.optimizers.Adam(learning_rate), d_optimizer=keras.optimizers.Adam(learning_rate)
    )
    return gan


def test_train_step_updates_the_average_with_warmed_up_decay_and_copies_batch_norm_statistics() -> None:
    gan = _tiny_gan(ema_decay=0.9)
    assert gan.ema_generator is not None
    before = [np.array(weight) for weight in gan.generator.weights]
    real = np.random.RandomState(0).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)

    logs = gan.train_on_batch(real, return_dict=True)

    assert set(logs) == {"d_loss", "g_loss"}
    assert int(gan.g_optimizer.iterations) == 1 and int(gan.d_optimizer.iterations) == 1
    decay = min(0.9, 2.0 / 11.0)  # one update so far: the warm-up decay (1 + n) / (10 + n) is smaller
    trainable = {id(weight) for weight in gan.generator.trainable_weights}
    for average, weight, old in zip(gan.ema_generator.weights, gan.generator.weights, before, strict=True):
        new = np.array(weight)
        expected = decay * old + (1 - decay) * new if id(weight) in trainable else new
        np.testing.assert_allclose(np.array(average), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.array(gan.generator.weights[0]), before[0])


def test_without_averaging_there_is_no_ema_generator_and_call_uses_the_generator() -> None:
    gan = _tiny_gan(ema_decay=0.0)
    z = np.random.RandomState(1).randn(3, 4).astype(np.float32)

    assert gan.ema_generator is None
    np.testing.assert_array_equal(np.asarray(gan(z)), np.asarray(gan.generator(z, training=False)))


@pytest.mark.parametrize("ema_decay", [-0.1, 1.0])
def test_ema_decay_outside_zero_one_is_rejected(ema_decay: float) -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        _tiny_gan(ema_decay)


def test_mixed_precision_keeps_float32_weights_outputs_and_losses() -> None:
    gan = DCGAN(
        build_generator(4, (28, 28, 1), dtype_policy="mixed_bfloat16"),
        build_discriminator((28, 28, 1), dtype_policy="mixed_bfloat16"),
        latent_dim=4,
        seed=0,
    )
    gan.compile(g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3))
    real = np.random.RandomState(0).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)

    logs = gan.train_on_batch(real, return_dict=True)

    assert all(np.isfinite(value) for value in logs.values())
    assert {weight.dtype for weight in gan.generator.weights + gan.discriminator.weights} == {"float32"}
    assert gan.generator(np.zeros((1, 4), np.float32)).dtype == "float32"
    assert gan.discriminator(real).dtype == "float32"


def _linear_critic(weights: np.ndarray) -> keras.Model:
    """D(x) = w . x: its input gradient is w for every image, so R1 is exactly |w|^2."""
    critic = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(1, use_bias=False)]
    )
    critic.layers[-1].kernel.assign(weights.reshape(-1, 1))
    return critic


def test_r1_penalty_is_the_squared_input_gradient_norm() -> None:
    weights = np.random.RandomState(0).randn(28 * 28).astype(np.float32) * 0.1
    real = np.random.RandomState(1).uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)

    penalty = float(r1_penalty(_linear_critic(weights), real))

    np.testing.assert_allclose(penalty, float(np.sum(weights.astype(np.float64) ** 2)), rtol=1e-4)


def test_r1_penalty_of_the_dcgan_discriminator_is_positive() -> None:
    keras.utils.set_random_seed(0)
    real = np.random.RandomState(1).uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)

    assert float(r1_penalty(build_discriminator((28, 28, 1)), real)) > 0


def _gan_with_critic(critic: keras.Model, r1_gamma: float, r1_interval: int) -> DCGAN:
    gan = DCGAN(
        build_generator(4, (28, 28, 1)), critic, latent_dim=4, r1_gamma=r1_gamma, r1_interval=r1_interval
    )
    gan.compile(g_optimizer=keras.optimizers.Adam(), d_optimizer=keras.optimizers.Adam())
    gan.build_optimizers()
    return gan


@pytest.mark.parametrize(("r1_gamma", "r1_interval"), [(1.0, 1), (3.0, 1), (3.0, 4)])
def test_lazy_r1_term_is_gamma_over_two_times_the_interval_times_r1_on_due_steps(
    r1_gamma: float, r1_interval: int
) -> None:
    weights = np.random.RandomState(0).randn(28 * 28).astype(np.float32) * 0.1
    gan = _gan_with_critic(_linear_critic(weights), r1_gamma, r1_interval)
    real = tf.constant(np.random.RandomState(1).uniform(-1, 1, (4, 28, 28, 1)), tf.float32)

    due = float(gan._lazy_r1(real, None))  # step 0 is due
    gan.d_optimizer.iterations.assign(1)
    skipped = float(gan._lazy_r1(real, None))

    expected = 0.5 * r1_gamma * r1_interval * float(np.sum(weights.astype(np.float64) ** 2))
    np.testing.assert_allclose(due, expected, rtol=1e-4)
    assert skipped == (due if r1_interval == 1 else 0.0)


def test_r1_training_step_reports_the_penalty_and_moves_the_discriminator() -> None:
    keras.utils.set_random_seed(0)
    gan = DCGAN(
        build_generator(4, (28, 28, 1)), build_discriminator((28, 28, 1)), latent_dim=4, r1_gamma=1.0, seed=0
    )
    gan.compile(g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3))
    before = [np.array(weight) for weight in gan.discriminator.weights]
    real = np.random.RandomState(0).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)

    logs = gan.train_on_batch(real, return_dict=True)

    assert set(logs) == {"d_loss", "g_loss", "r1"} and logs["r1"] > 0
    assert all(np.isfinite(value) for value in logs.values())
    assert not np.allclose(np.array(gan.discriminator.weights[0]), before[0])


@pytest.mark.parametrize(("r1_gamma", "r1_interval"), [(-1.0, 16), (1.0, 0)])
def test_bad_r1_settings_are_rejected(r1_gamma: float, r1_interval: int) -> None:
    with pytest.raises(ValueError, match="r1_"):
        _gan_with_critic(build_discriminator((28, 28, 1)), r1_gamma, r1_interval)


@pytest.mark.parametrize("size", [28, 64])
def test_discriminator_width_multiplies_every_convolution_and_keeps_one_logit(size: int) -> None:
    narrow = build_discriminator((size, size, 1))
    wide = build_discriminator((size, size, 1), width=2.0)

    def filters(model: keras.Model) -> list[int]:
        return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    assert filters(wide) == [2 * count for count in filters(narrow)]
    assert wide(np.zeros((2, size, size, 1), np.float32)).shape == (2, 1)


def test_discriminator_width_outside_its_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="d_width must be between"):
        build_discriminator((28, 28, 1), width=0.1)


def test_mode_seeking_ratio_is_the_image_distance_over_the_latent_distance_between_halves() -> None:
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (6, 28, 28, 1)).astype(np.float32)
    z = rng.randn(6, 4).astype(np.float32)

    ratio = float(mode_seeking_ratio(tf.constant(images), tf.constant(z)))

    expected = np.abs(images[:3] - images[3:]).mean() / np.abs(z[:3] - z[3:]).mean()
    np.testing.assert_allclose(ratio, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("labels", "paired"), [([0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2]), ([5, 6, 7, 8, 9], [5, 6, 5, 6, 9])]
)
def test_paired_halves_repeat_the_first_half_in_the_second(labels: list[int], paired: list[int]) -> None:
    assert paired_halves(tf.constant(labels, tf.int32)).numpy().tolist() == paired


def _mode_seeking_gan(mode_seeking: float) -> DCGAN:
    keras.utils.set_random_seed(0)
    return _tiny_gan(0.0, 1e-3, mode_seeking=mode_seeking)


def test_mode_seeking_changes_only_the_generator_update_and_reports_the_ratio() -> None:
    real = np.random.RandomState(0).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
    plain, seeking = _mode_seeking_gan(0.0), _mode_seeking_gan(1.0)

    plain_logs = plain.train_on_batch(real, return_dict=True)
    seeking_logs = seeking.train_on_batch(real, return_dict=True)

    assert set(plain_logs) == {"d_loss", "g_loss"}
    assert set(seeking_logs) == {"d_loss", "g_loss", "ms_ratio"} and seeking_logs["ms_ratio"] > 0
    # Same seed, same latents, same adversarial losses: the term moves the generator alone.
    assert seeking_logs["d_loss"] == pytest.approx(plain_logs["d_loss"])
    for plain_weight, seeking_weight in zip(
        plain.discriminator.weights, seeking.discriminator.weights, strict=True
    ):
        np.testing.assert_allclose(np.array(plain_weight), np.array(seeking_weight), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.array(plain.generator.weights[0]), np.array(seeking.generator.weights[0]))


def test_bad_mode_seeking_weight_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode_seeking must be 0"):
        _mode_seeking_gan(-1.0)
