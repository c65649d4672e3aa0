import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve.store import read_metadata
from training.cdcgan import ConditionalDCGAN, build_conditional_discriminator, build_conditional_generator
from training.config import TrainConfig
from training.dcgan import DCGAN
from training.losses import discriminator_loss, generator_loss
from training.models import checkpoint_objects
from training.networks import build_discriminator, build_generator
from training.options import DIFFAUGMENT_POLICIES
from training.run_folder import HISTORY_FILE
from training.train import train

SIZE = 28


def _logits(*values: float) -> tf.Tensor:
    return tf.constant(values, tf.float32)[:, None]


def _images(count: int = 16, channels: int = 1, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.RandomState(seed).uniform(-1, 1, (count, SIZE, SIZE, channels)), tf.float32)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def test_hinge_losses_on_known_logits() -> None:
    real, fake = _logits(2.0, 0.5, -1.0), _logits(-2.0, 0.0, 1.0)

    d_loss = discriminator_loss(real, fake, loss="hinge")
    g_loss = generator_loss(fake, loss="hinge")

    # Real: relu(1 - [2, 0.5, -1]) = [0, 0.5, 2]; fake: relu(1 + [-2, 0, 1]) = [0, 1, 2].
    np.testing.assert_allclose(float(d_loss), 2.5 / 3 + 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(g_loss), 1.0 / 3, rtol=1e-6)


def test_cross_entropy_losses_match_the_formula_and_smoothing_moves_only_the_real_term() -> None:
    real, fake = np.array([3.0, -0.5, 8.0]), np.array([-4.0, 0.25, 1.5])
    smoothing = 0.1

    plain = float(discriminator_loss(_logits(*real), _logits(*fake)))
    smoothed = float(discriminator_loss(_logits(*real), _logits(*fake), label_smoothing=smoothing))
    g_loss = float(generator_loss(_logits(*fake)))

    # Cross-entropy on logits: target t, logit x costs softplus(x) - t * x.
    expected = np.mean(_softplus(real) - real) + np.mean(_softplus(fake))
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
    np.testing.assert_allclose(smoothed - plain, smoothing * real.mean(), rtol=1e-5)
    np.testing.assert_allclose(g_loss, np.mean(_softplus(fake) - fake), rtol=1e-6)


def test_smoothed_real_loss_is_lowest_at_the_smoothed_target_not_at_infinity() -> None:
    smoothing = 0.1
    best = tf.Variable([[np.log((1 - smoothing) / smoothing)]], dtype=tf.float32)
    larger = tf.Variable([[10.0]], dtype=tf.float32)
    no_fakes = tf.constant(-1e4, tf.float32, shape=(1, 1))

    with tf.GradientTape(persistent=True) as tape:
        at_best = discriminator_loss(best, no_fakes, label_smoothing=smoothing)
        at_larger = discriminator_loss(larger, no_fakes, label_smoothing=smoothing)

    assert abs(float(tape.gradient(at_best, best)[0, 0])) < 1e-5
    assert float(tape.gradient(at_larger, larger)[0, 0]) > 0.05
    assert float(at_larger) > float(at_best)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"loss": "wasserstein"}, "unknown loss"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"loss": "hinge", "label_smoothing": 0.1}, "hinge loss has no targets"),
        ({"diffaugment": ("translation", "flip")}, "unknown DiffAugment policy 'flip'"),
        ({"diffaugment": "translation,cutout"}, "sequence of policy names"),
    ],
)
def test_bad_recipe_options_are_rejected_with_a_hint(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DCGAN(
            build_generator(4, (SIZE, SIZE, 1)), build_discriminator((SIZE, SIZE, 1)), latent_dim=4, **options
        )


def _gan(discriminator: keras.Model | None = None, **options: Any) -> DCGAN:
    gan = DCGAN(
        build_generator(4, (SIZE, SIZE, 1)),
        discriminator or build_discriminator((SIZE, SIZE, 1)),
        latent_dim=4,
        seed=0,
        **options,
    )
    # One step each: tracing the step would cost more than running it eagerly.
    gan.compile(
        g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True
    )
    return gan


def _one_step_weights(**options: Any) -> list[np.ndarray]:
    keras.utils.set_random_seed(0)
    gan = _gan(**options)
    gan.train_on_batch(_images(count=8).numpy(), return_dict=True)
    return [np.array(weight) for weight in gan.generator.weights]


def test_a_diffaugment_step_is_reproducible_and_differs_from_a_plain_one() -> None:
    augmented = _one_step_weights(diffaugment=("translation", "cutout"))
    again = _one_step_weights(diffaugment=("translation", "cutout"))
    plain = _one_step_weights()

    for first, second in zip(augmented, again, strict=True):
        np.testing.assert_array_equal(first, second)
    assert not all(np.array_equal(first, second) for first, second in zip(augmented, plain, strict=True))


def _spectral_kernels(discriminator: keras.Model) -> list[keras.Variable]:
    wrappers = [
        layer for layer in discriminator.layers if isinstance(layer, keras.layers.SpectralNormalization)
    ]
    return [wrapper.layer.kernel for wrapper in wrappers]


def test_spectral_norm_under_mixed_precision_keeps_float32_kernels_of_norm_one() -> None:
    keras.utils.set_random_seed(0)
    discriminator = build_discriminator((SIZE, SIZE, 1), dtype_policy="mixed_bfloat16", spectral_norm=True)
    images = _images(count=8)

    for _ in range(40):  # one power iteration per training call
        logits = discriminator(images, training=True)

    kernels = _spectral_kernels(discriminator)
    assert len(kernels) == 3 and logits.dtype == "float32"
    for kernel in kernels:
        values = np.array(kernel)
        top = np.linalg.svd(values.reshape(-1, values.shape[-1]), compute_uv=False)[0]
        assert kernel.dtype == "float32" and abs(top - 1.0) < 0.02
        # Normalising a bfloat16 copy would leave every weight exactly representable in bfloat16.
        assert not np.array_equal(values, tf.cast(tf.cast(values, tf.bfloat16), tf.float32).numpy())


def test_spectral_norm_discriminator_trains_and_its_checkpoint_restores(tmp_path: Path) -> None:
    gan = _gan(build_discriminator((SIZE, SIZE, 1), spectral_norm=True))
    logs = gan.train_on_batch(_images(count=8).numpy(), return_dict=True)
    path = tf.train.Checkpoint(**checkpoint_objects(gan)).save(str(tmp_path / "ckpt"))

    restored = _gan(build_discriminator((SIZE, SIZE, 1), spectral_norm=True))
    fresh = {weight.path: np.array(weight) for weight in restored.discriminator.weights}
    restored.build_optimizers()
    tf.train.Checkpoint(**checkpoint_objects(restored)).restore(path).assert_existing_objects_matched()

    assert all(np.isfinite(value) for value in logs.values())
    saved = {weight.path: np.array(weight) for weight in gan.discriminator.weights}
    loaded = {weight.path: np.array(weight) for weight in restored.discriminator.weights}
    power_vectors = [name for name in saved if name.endswith("vector_u")]
    assert len(power_vectors) == 3 and saved.keys() == loaded.keys()
    for name, value in saved.items():
        np.testing.assert_array_equal(value, loaded[name], err_msg=name)
    assert not any(np.array_equal(fresh[name], loaded[name]) for name in power_vectors)


def test_conditional_gan_takes_every_recipe_option() -> None:
    discriminator = build_conditional_discriminator((SIZE, SIZE, 1), 3, spectral_norm=True)
    gan = ConditionalDCGAN(
        build_conditional_generator(4, (SIZE, SIZE, 1), 3),
        discriminator,
        num_classes=3,
        latent_dim=4,
        seed=0,
        loss="hinge",
        diffaugment=DIFFAUGMENT_POLICIES,
    )
    # One step each: tracing the step would cost more than running it eagerly.
    gan.compile(
        g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True
    )

    logs = gan.train_on_batch(_images(count=6).numpy(), np.array([0, 1, 2] * 2, np.int32), return_dict=True)

    assert len(_spectral_kernels(discriminator)) == 3
    assert all(np.isfinite(value) for value in logs.values())


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "hinge", "spectral_norm": True, "diffaugment": "color,translation,cutout"},
        {"label_smoothing": 0.1, "diffaugment": "translation,cutout", "mixed_precision": True},
    ],
    ids=["hinge-sn-diffaugment", "smoothing-diffaugment-bf16"],
)
def test_tiny_training_with_recipe_options_publishes_and_resumes(
    options: dict[str, Any], tmp_path: Path
) -> None:
    config = TrainConfig(
        dataset="shapes",
        name="shapes-recipe",
        limit=64,
        epochs=1,
        batch_size=32,
        latent_dim=16,
        store=tmp_path / "store",
        run_dir=tmp_path / "run",
        **options,
    )

    result = train(config)
    resumed = train(replace(config, epochs=2, resume=True, export=False))

    assert result.version_dir is not None
    assert read_metadata(result.version_dir).epochs == 1
    assert resumed.epochs_completed == 2
    history = json.loads((config.run_path / HISTORY_FILE).read_text())["epochs"]
    assert all(np.isfinite(entry["d_loss"]) and np.isfinite(entry["g_loss"]) for entry in history)
