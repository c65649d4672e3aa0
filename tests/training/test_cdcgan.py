from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve.conventions import cycled_labels, latents_from_seeds, to_uint8
from genserve.store import (
    FROM_EMBEDDING_SIGNATURE,
    IMAGES_OUTPUT,
    LABEL_EMBEDDINGS_OUTPUT,
    LABEL_EMBEDDINGS_SIGNATURE,
    LABEL_INPUT,
    LATENT_INPUT,
    SIGNATURE_NAME,
    read_metadata,
)
from training.cdcgan import (
    LABEL_EMBEDDING_DIM,
    ConditionalDCGAN,
    build_conditional_discriminator,
    build_conditional_generator,
    class_from_latent,
)
from training.cli import main
from training.config import TrainConfig
from training.export import export_checkpoint, export_generator
from training.losses import mode_seeking_ratio
from training.metadata import CLASS_FROM_LATENT, build_metadata
from training.run_info import RunInfo
from training.train import TrainResult, train

LATENT_DIM = 8
NUM_CLASSES = 3


@pytest.mark.parametrize("size", [28, 64])
def test_conditional_builders_take_a_label_beside_latents_and_images(size: int) -> None:
    generator = build_conditional_generator(LATENT_DIM, (size, size, 1), NUM_CLASSES)
    discriminator = build_conditional_discriminator((size, size, 1), NUM_CLASSES)
    z = np.random.RandomState(0).randn(2, LATENT_DIM).astype(np.float32)
    labels = np.array([0, 2], dtype=np.int32)

    images = np.asarray(generator([z, labels], training=False))
    logits = np.asarray(discriminator([images, labels], training=False))

    assert [tensor.name for tensor in generator.inputs] == ["z", "label"]
    assert images.shape == (2, size, size, 1) and images.min() >= -1.0 and images.max() <= 1.0
    assert logits.shape == (2, 1)


def test_the_label_changes_the_generated_image() -> None:
    keras.utils.set_random_seed(0)
    generator = build_conditional_generator(LATENT_DIM, (28, 28, 1), NUM_CLASSES)
    z = np.repeat(np.random.RandomState(0).randn(1, LATENT_DIM).astype(np.float32), 2, axis=0)

    images = np.asarray(generator([z, np.array([0, 1], np.int32)], training=False))

    assert not np.allclose(images[0], images[1])


def test_fewer_than_two_classes_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_conditional_generator(LATENT_DIM, (28, 28, 1), 1)


def test_train_step_without_labels_says_how_to_batch_the_data() -> None:
    gan = ConditionalDCGAN(
        build_conditional_generator(LATENT_DIM, (28, 28, 1), NUM_CLASSES),
        build_conditional_discriminator((28, 28, 1), NUM_CLASSES),
        num_classes=NUM_CLASSES,
        latent_dim=LATENT_DIM,
    )
    gan.compile(g_optimizer=keras.optimizers.Adam(), d_optimizer=keras.optimizers.Adam())

    with pytest.raises(ValueError, match="with_labels=True"):
        gan.train_on_batch(np.zeros((4, 28, 28, 1), np.float32))


def test_unlabelled_data_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    np.savez(tmp_path / "faces.npz", images=np.zeros((40, 28, 28), np.uint8))
    config = TrainConfig(
        model="cdcgan",
        dataset=f"npz:{tmp_path / 'faces.npz'}",
        name="faces-cdcgan",
        store=tmp_path / "store",
        run_dir=tmp_path / "run",
        batch_size=8,
        epochs=1,
    )

    with pytest.raises(ValueError, match="needs class labels"):
        train(config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, TrainResult]:
    root = tmp_path_factory.mktemp("cdcgan")
    config = TrainConfig(
        model="cdcgan",
        dataset="shapes",
        name="shapes-cdcgan",
        store=root / "store",
        run_dir=root / "run",
        epochs=1,
        batch_size=32,
        limit=64,
        latent_dim=LATENT_DIM,
        sample_grid=4,
    )
    return config, train(config)


def test_training_publishes_a_model_taking_latents_and_labels(
    trained: tuple[TrainConfig, TrainResult],
) -> None:
    _, result = trained
    assert result.version_dir is not None
    metadata = read_metadata(result.version_dir)
    signature = tf.saved_model.load(str(result.version_dir)).signatures[SIGNATURE_NAME]
    inputs = signature.structured_input_signature[1]

    assert metadata.kind == "cdcgan" and metadata.conditional
    assert metadata.class_names == ["circle", "square", "triangle"]
    assert inputs[LATENT_INPUT].dtype == tf.float32 and inputs[LATENT_INPUT].shape.as_list() == [
        None,
        LATENT_DIM,
    ]
    assert inputs[LABEL_INPUT].dtype == tf.int32 and inputs[LABEL_INPUT].shape.as_list() == [None]


def test_sample_grid_has_one_row_per_class(trained: tuple[TrainConfig, TrainResult]) -> None:
    from PIL import Image

    _, result = trained
    with Image.open(result.run_dir / "samples" / "epoch_001.png") as grid:
        assert grid.size == (4 * 28, 3 * 28)


def test_exported_images_equal_the_averaged_keras_generator(trained: tuple[TrainConfig, TrainResult]) -> None:
    config, result = trained
    assert result.version_dir is not None
    checkpointed = export_checkpoint(config.run_path, config.store)  # rebuilds the generator from the run
    z = latents_from_seeds(range(6), LATENT_DIM)
    labels = cycled_labels(6, NUM_CLASSES)
    signature = tf.saved_model.load(str(result.version_dir)).signatures[SIGNATURE_NAME]
    served = signature(z=tf.constant(z), label=tf.constant(labels))[IMAGES_OUTPUT].numpy()
    again = tf.saved_model.load(str(checkpointed)).signatures[SIGNATURE_NAME]

    generator = build_conditional_generator(LATENT_DIM, (28, 28, 3), NUM_CLASSES)
    checkpoint = tf.train.Checkpoint(ema_generator=generator)
    checkpoint.restore(tf.train.latest_checkpoint(str(config.run_path / "checkpoints"))).expect_partial()
    expected = to_uint8(np.asarray(generator([z, labels], training=False)))

    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(again(z=tf.constant(z), label=tf.constant(labels))[IMAGES_OUTPUT], served)


def test_resume_continues_a_conditional_run(trained: tuple[TrainConfig, TrainResult]) -> None:
    config, _ = trained
    from dataclasses import replace

    resumed = train(replace(config, epochs=2, resume=True, export=False))

    assert resumed.epochs_completed == 2


def test_from_embedding_with_a_class_row_equals_generating_that_class(
    trained: tuple[TrainConfig, TrainResult],
) -> None:
    _, result = trained
    assert result.version_dir is not None
    loaded = tf.saved_model.load(str(result.version_dir))
    table = loaded.signatures[LABEL_EMBEDDINGS_SIGNATURE]()[LABEL_EMBEDDINGS_OUTPUT].numpy()
    z = latents_from_seeds(range(3), LATENT_DIM)
    labels = np.array([2, 0, 1], dtype=np.int32)

    by_label = loaded.signatures[SIGNATURE_NAME](z=tf.constant(z), label=tf.constant(labels))[IMAGES_OUTPUT]
    by_embedding = loaded.signatures[FROM_EMBEDDING_SIGNATURE](
        z=tf.constant(z), label_embedding=tf.constant(table[labels])
    )[IMAGES_OUTPUT]

    assert table.shape == (NUM_CLASSES, LABEL_EMBEDDING_DIM) and table.dtype == np.float32
    assert np.abs(by_label.numpy().astype(int) - by_embedding.numpy().astype(int)).max() <= 1


def test_class_from_latent_draws_every_class_equally_and_keeps_the_latents_standard_normal() -> None:
    z = np.random.RandomState(0).randn(60_000, LATENT_DIM).astype(np.float32)

    latents, labels = (tensor.numpy() for tensor in class_from_latent(z, NUM_CLASSES))

    shares = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    assert labels.dtype == np.int32 and latents.dtype == np.float32 and latents.shape == z.shape
    np.testing.assert_allclose(shares, 1 / NUM_CLASSES, atol=0.01)
    np.testing.assert_array_equal(latents[:, 1:], z[:, 1:])
    for label in range(NUM_CLASSES):  # within every class the redrawn coordinate is N(0, 1) again
        redrawn = latents[labels == label, 0]
        assert abs(redrawn.mean()) < 0.03 and abs(redrawn.std() - 1.0) < 0.03
    # the class is read from the first coordinate: its lowest third is class 0, its highest class 2
    assert set(labels[z[:, 0] < -0.5]) == {0} and set(labels[z[:, 0] > 0.5]) == {2}
    extreme, extreme_labels = class_from_latent(np.array([[40.0] + [0.0] * 7, [-40.0] + [0.0] * 7]), 3)
    assert np.isfinite(extreme.numpy()).all() and extreme_labels.numpy().tolist() == [2, 0]


def test_a_conditional_run_published_unconditionally_draws_its_class_from_the_latent(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    config, _ = trained
    version = export_checkpoint(config.run_path, tmp_path / "store", name="shapes-any", unconditional=True)
    metadata = read_metadata(version)
    signature = tf.saved_model.load(str(version)).signatures[SIGNATURE_NAME]
    z = latents_from_seeds(range(12), LATENT_DIM)
    latents, labels = class_from_latent(z, NUM_CLASSES)
    same_checkpoint = export_checkpoint(config.run_path, tmp_path / "store")
    conditional = tf.saved_model.load(str(same_checkpoint)).signatures[SIGNATURE_NAME]

    served = signature(z=tf.constant(z))[IMAGES_OUTPUT].numpy()
    expected = conditional(z=latents, label=labels)[IMAGES_OUTPUT].numpy()

    assert metadata.name == "shapes-any" and metadata.kind == "dcgan" and not metadata.conditional
    assert metadata.class_names is None and metadata.training_config[CLASS_FROM_LATENT] is True
    assert list(signature.structured_input_signature[1]) == [LATENT_INPUT]
    assert len(set(labels.numpy().tolist())) > 1
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


def test_the_unconditional_signature_draws_the_image_of_the_class_its_latent_picks(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    generator = build_conditional_generator(LATENT_DIM, (28, 28, 1), NUM_CLASSES)
    embedding = generator.get_layer("label_embedding")
    embedding.embeddings.assign(embedding.embeddings * 200.0)  # classes far apart, so pixels show the class
    config = TrainConfig(model="cdcgan", dataset="shapes", name="shapes-cdcgan", latent_dim=LATENT_DIM)
    info = RunInfo(config, (28, 28, 1), ["circle", "square", "triangle"])
    metadata = build_metadata(info, epochs=1, averaged=False, unconditional=True)
    version = export_generator(generator, metadata, tmp_path)
    z = latents_from_seeds(range(24), LATENT_DIM)
    latents, labels = class_from_latent(z, NUM_CLASSES)

    served = tf.saved_model.load(str(version)).signatures[SIGNATURE_NAME](z=tf.constant(z))[IMAGES_OUTPUT]
    own_class = to_uint8(np.asarray(generator([latents, labels], training=False)))
    next_class = to_uint8(np.asarray(generator([latents, (labels + 1) % NUM_CLASSES], training=False)))

    distance_to_own = np.abs(served.numpy().astype(int) - own_class.astype(int)).max(axis=(1, 2, 3))
    distance_to_next = np.abs(served.numpy().astype(int) - next_class.astype(int)).max(axis=(1, 2, 3))
    assert set(labels.numpy().tolist()) == {0, 1, 2}
    assert distance_to_own.max() <= 1 and distance_to_next.min() > 8


@pytest.mark.parametrize("unconditional", [False, True])
def test_every_signature_scales_the_latents_after_the_class_is_drawn(
    unconditional: bool, tmp_path: Path
) -> None:
    keras.utils.set_random_seed(1)
    generator = build_conditional_generator(LATENT_DIM, (28, 28, 1), NUM_CLASSES)
    config = TrainConfig(model="cdcgan", dataset="shapes", name="shapes-cdcgan", latent_dim=LATENT_DIM)
    info = RunInfo(config, (28, 28, 1), ["circle", "square", "triangle"])
    metadata = build_metadata(info, epochs=1, averaged=False, unconditional=unconditional, latent_scale=4.0)
    loaded = tf.saved_model.load(str(export_generator(generator, metadata, tmp_path)))
    z = latents_from_seeds(range(12), LATENT_DIM)
    drawn = class_from_latent(z, NUM_CLASSES) if unconditional else (z, np.arange(12) % NUM_CLASSES)
    latents, labels = np.asarray(drawn[0]), np.asarray(drawn[1], np.int32)
    expected = to_uint8(np.asarray(generator([4.0 * latents, labels], training=False)))

    if unconditional:
        served = loaded.signatures[SIGNATURE_NAME](z=tf.constant(z))[IMAGES_OUTPUT].numpy()
    else:
        served = loaded.signatures[SIGNATURE_NAME](z=tf.constant(z), label=tf.constant(labels, tf.int32))
        served = served[IMAGES_OUTPUT].numpy()
        table = loaded.signatures[LABEL_EMBEDDINGS_SIGNATURE]()[LABEL_EMBEDDINGS_OUTPUT].numpy()
        blended = loaded.signatures[FROM_EMBEDDING_SIGNATURE](
            z=tf.constant(z), label_embedding=tf.constant(table[labels])
        )[IMAGES_OUTPUT].numpy()
        assert np.abs(blended.astype(int) - expected.astype(int)).max() <= 1
    unscaled = to_uint8(np.asarray(generator([latents, labels], training=False)))
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(served.astype(int) - unscaled.astype(int)).max() > 2  # not rounding


def test_export_command_publishes_unconditionally(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = trained
    store = tmp_path / "store"

    code = main(["export", str(config.run_path), "--store", str(store), "--name", "any", "--unconditional"])

    printed = Path(capsys.readouterr().out.strip())
    assert code == 0 and printed == store / "any" / "1"
    assert read_metadata(printed).kind == "dcgan" and not read_metadata(printed).conditional


def test_an_unconditional_run_cannot_be_published_unconditionally_again() -> None:
    info = RunInfo(TrainConfig(dataset="mnist", name="digits"), (28, 28, 1), [str(d) for d in range(10)])

    with pytest.raises(ValueError, match="only a conditional run"):
        build_metadata(info, epochs=1, averaged=True, unconditional=True)


@pytest.mark.parametrize("width", [1.0, 2.0])
def test_projection_discriminator_gives_one_logit_that_depends_on_the_class(width: float) -> None:
    keras.utils.set_random_seed(0)
    discriminator = build_conditional_discriminator(
        (28, 28, 1), NUM_CLASSES, conditioning="projection", width=width
    )
    images = np.repeat(np.random.RandomState(0).uniform(-1, 1, (1, 28, 28, 1)), 3, axis=0).astype(np.float32)

    logits = np.asarray(discriminator([images, np.arange(NUM_CLASSES, dtype=np.int32)], training=False))

    assert logits.shape == (NUM_CLASSES, 1) and logits.dtype == np.float32
    assert len(np.unique(logits.round(6))) == NUM_CLASSES  # the same image scores differently per class
    projection = discriminator.get_layer("class_projection")
    assert projection.embeddings.shape == (NUM_CLASSES, discriminator.get_layer("flatten").output.shape[-1])
    assert "label_map" not in [layer.name for layer in discriminator.layers]


def test_unknown_conditioning_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="concat, projection"):
        build_conditional_discriminator((28, 28, 1), NUM_CLASSES, conditioning="auxiliary")


def _projection_cdcgan(
    generator: keras.Model, dtype_policy: str = "float32", **options: Any
) -> ConditionalDCGAN:
    gan = ConditionalDCGAN(
        generator,
        build_conditional_discriminator(
            (28, 28, 1), NUM_CLASSES, dtype_policy=dtype_policy, conditioning="projection"
        ),
        num_classes=NUM_CLASSES,
        latent_dim=LATENT_DIM,
        seed=0,
        **options,
    )
    gan.compile(g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3))
    return gan


def test_projection_cdcgan_trains_with_r1_under_mixed_precision() -> None:
    generator = build_conditional_generator(
        LATENT_DIM, (28, 28, 1), NUM_CLASSES, dtype_policy="mixed_bfloat16"
    )
    gan = _projection_cdcgan(generator, "mixed_bfloat16", r1_gamma=1.0, r1_interval=1)
    images = np.random.RandomState(0).uniform(-1, 1, (6, 28, 28, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)

    logs = gan.train_on_batch(images, labels, return_dict=True)

    assert set(logs) == {"d_loss", "g_loss", "r1"}
    assert all(np.isfinite(value) for value in logs.values()) and logs["r1"] > 0


def _label_only_generator() -> keras.Model:
    """A conditional generator whose images depend on the class alone: equal classes, equal images."""
    z = keras.Input(shape=(LATENT_DIM,), name="z")
    label = keras.Input(shape=(), dtype="int32", name="label")
    pixels = keras.layers.Embedding(NUM_CLASSES, 28 * 28, name="class_image")(label)
    unused = keras.layers.Dense(28 * 28, kernel_initializer="zeros", name="ignores_z")(z)
    images = keras.layers.Reshape((28, 28, 1))(keras.layers.Add()([pixels, unused]))
    return keras.Model([z, label], keras.layers.Activation("tanh")(images), name="generator")


def test_mode_seeking_draws_both_halves_of_a_batch_for_the_same_classes() -> None:
    gan = _projection_cdcgan(_label_only_generator(), ema_decay=0.0, mode_seeking=1.0)
    images = np.random.RandomState(0).uniform(-1, 1, (6, 28, 28, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 1, 2, 0], np.int32)  # the real batch's halves differ in every row
    z = tf.constant(np.random.RandomState(1).randn(6, LATENT_DIM), tf.float32)
    unpaired = float(mode_seeking_ratio(gan.generator([z, tf.constant(labels)]), z))

    logs = gan.train_on_batch(images, labels, return_dict=True)

    # The generator's images depend on the class alone: the halves coincide only when drawn for equal classes.
    assert unpaired > 0
    assert logs["ms_ratio"] == 0.0
