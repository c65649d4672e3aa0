import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve.store import read_metadata
from training.callbacks import checkpoint_objects
from training.cdcgan import ConditionalDCGAN, build_conditional_discriminator, build_conditional_generator
from training.config import HISTORY_FILE, TrainConfig
from training.dcgan import (
    AUGMENT_FILL,
    DCGAN,
    build_discriminator,
    build_generator,
    diff_augment,
    discriminator_loss,
    generator_loss,
    random_color,
    random_cutout,
    random_translation,
)
from training.train import train

SIZE = 28
MAX_SHIFT = 4  # 1/8 of 28 pixels, rounded
CUTOUT_SIDE = 14
ALL_POLICIES = ("color", "translation", "cutout")


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


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policies", [("color",), ("translation",), ("cutout",), ALL_POLICIES])
def test_diff_augment_keeps_shape_and_dtype_and_repeats_under_a_seed(
    policies: tuple[str, ...], channels: int
) -> None:
    images = _images(channels=channels)

    first = diff_augment(images, policies, keras.random.SeedGenerator(7))
    again = diff_augment(images, policies, keras.random.SeedGenerator(7))
    other = diff_augment(images, policies, keras.random.SeedGenerator(8))

    assert first.shape == images.shape and first.dtype == tf.float32
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    assert not np.array_equal(first.numpy(), images.numpy())


def test_diff_augment_draws_afresh_at_every_call_even_inside_a_tf_function() -> None:
    seed = keras.random.SeedGenerator(0)
    augment = tf.function(lambda images: diff_augment(images, ALL_POLICIES, seed))
    images = _images(count=4)

    assert not np.array_equal(augment(images).numpy(), augment(images).numpy())


def _shifted(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`image` moved down by `rows` and right by `columns`, the uncovered part filled."""
    out = np.full_like(image, AUGMENT_FILL)
    height, width = image.shape[:2]
    out[max(rows, 0) : height + min(rows, 0), max(columns, 0) : width + min(columns, 0)] = image[
        max(-rows, 0) : height - max(rows, 0), max(-columns, 0) : width - max(columns, 0)
    ]
    return out


def test_translation_moves_each_image_by_at_most_an_eighth_and_fills_with_the_background() -> None:
    ramp = np.arange(SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE, 1) / (SIZE * SIZE)
    images = np.repeat(ramp[None], 16, axis=0)

    moved = random_translation(tf.constant(images), keras.random.SeedGenerator(3)).numpy()

    shifts = range(-MAX_SHIFT, MAX_SHIFT + 1)
    found = []
    for image in moved:
        matches = [
            (r, c) for r, c in itertools.product(shifts, shifts) if np.allclose(image, _shifted(ramp, r, c))
        ]
        assert len(matches) == 1, "each image is its input shifted by one offset within the limit"
        found.append(matches[0])
    assert len(set(found)) > 1 and any(shift != (0, 0) for shift in found)


def test_cutout_blanks_one_clipped_square_of_half_the_side_and_leaves_the_rest() -> None:
    images = np.ones((32, SIZE, SIZE, 3), np.float32)

    cut = random_cutout(tf.constant(images), keras.random.SeedGenerator(5)).numpy()

    blanked = cut == AUGMENT_FILL
    np.testing.assert_array_equal(cut[~blanked], 1.0)
    for mask in blanked.all(axis=-1):
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        np.testing.assert_array_equal(mask, np.outer(mask.any(axis=1), mask.any(axis=0)))
        for run in (rows, columns):
            assert CUTOUT_SIDE // 2 <= len(run) <= CUTOUT_SIDE
            assert run[-1] - run[0] == len(run) - 1
    assert len({tuple(np.flatnonzero(mask.any(axis=1))) for mask in blanked.all(axis=-1)}) > 1


def test_color_changes_a_grayscale_image_by_one_affine_map_per_image() -> None:
    images = _images(count=8)

    jittered = random_color(images, keras.random.SeedGenerator(0)).numpy()

    for before, after in zip(images.numpy().ravel().reshape(8, -1), jittered.reshape(8, -1), strict=True):
        scale, offset = np.polyfit(before, after, 1)
        np.testing.assert_allclose(after, scale * before + offset, atol=1e-5)
        assert 0.5 <= scale < 1.5
    assert not np.allclose(jittered, images.numpy())


def test_gradients_flow_through_the_augmentation_except_where_it_cut() -> None:
    images = tf.Variable(_images(count=8, channels=3))
    weights = tf.constant(np.random.RandomState(1).randn(*images.shape), tf.float32)

    with tf.GradientTape(persistent=True) as tape:
        every_policy = tf.reduce_sum(
            diff_augment(images, ALL_POLICIES, keras.random.SeedGenerator(2)) * weights
        )
        moved_and_cut = tf.reduce_sum(
            diff_augment(images, ("translation", "cutout"), keras.random.SeedGenerator(2)) * weights
        )
    through_all = tape.gradient(every_policy, images).numpy()
    through_moved_and_cut = tape.gradient(moved_and_cut, images).numpy()

    # Color's contrast mixes every pixel into every other, so all of them get a gradient.
    assert np.isfinite(through_all).all() and (through_all != 0).all()
    for per_image in through_moved_and_cut.reshape(8, -1):
        # What was shifted out or cut away gets none: at worst a 4-pixel band each way and a 14x14 square.
        assert (24 * 24 - 14 * 14) / (28 * 28) <= np.mean(per_image != 0) < 1.0


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
        diffaugment=ALL_POLICIES,
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
