from pathlib import Path

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
)
from training.config import TrainConfig
from training.export import export_checkpoint
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


def test_projection_cdcgan_trains_with_r1_under_mixed_precision() -> None:
    gan = ConditionalDCGAN(
        build_conditional_generator(LATENT_DIM, (28, 28, 1), NUM_CLASSES, dtype_policy="mixed_bfloat16"),
        build_conditional_discriminator(
            (28, 28, 1), NUM_CLASSES, dtype_policy="mixed_bfloat16", conditioning="projection"
        ),
        num_classes=NUM_CLASSES,
        latent_dim=LATENT_DIM,
        r1_gamma=1.0,
        r1_interval=1,
        seed=0,
    )
    gan.compile(g_optimizer=keras.optimizers.Adam(1e-3), d_optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.RandomState(0).uniform(-1, 1, (6, 28, 28, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)

    logs = gan.train_on_batch(images, labels, return_dict=True)

    assert set(logs) == {"d_loss", "g_loss", "r1"}
    assert all(np.isfinite(value) for value in logs.values()) and logs["r1"] > 0
