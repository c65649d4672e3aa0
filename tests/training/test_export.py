from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve.conventions import latents_from_seeds, to_uint8
from genserve.store import (
    COMPLETE_MARKER,
    IMAGES_OUTPUT,
    LATENT_INPUT,
    SIGNATURE_NAME,
    ModelMetadata,
    list_versions,
    read_metadata,
)
from training.config import TrainConfig
from training.export import export_generator
from training.metadata import build_metadata
from training.networks import build_generator
from training.run_info import RunInfo

LATENT_DIM = 16
IMAGE_SHAPE = (28, 28, 3)
NAME = "export-test"


def _generator() -> keras.Model:
    keras.utils.set_random_seed(3)
    generator = build_generator(LATENT_DIM, IMAGE_SHAPE)
    # Moving statistics far from the identity make inference mode visibly differ from training mode.
    for weight in generator.weights:
        if "moving_mean" in weight.path:
            weight.assign(np.full(weight.shape, 0.05, np.float32))
        elif "moving_variance" in weight.path:
            weight.assign(np.full(weight.shape, 0.02, np.float32))
    return generator


def _metadata(name: str = NAME, latent_scale: float = 1.0) -> ModelMetadata:
    config = TrainConfig(dataset="shapes", name=name, latent_dim=LATENT_DIM, epochs=3)
    info = RunInfo(config, IMAGE_SHAPE, ["circle", "square", "triangle"])
    return build_metadata(info, epochs=3, averaged=True, latent_scale=latent_scale)


@pytest.fixture(scope="module")
def generator() -> keras.Model:
    return _generator()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, generator: keras.Model) -> Path:
    store = tmp_path_factory.mktemp("store")
    return export_generator(generator, _metadata(), store)


def test_signature_takes_float_latents_and_returns_uint8_images(exported: Path) -> None:
    signature = tf.saved_model.load(str(exported)).signatures[SIGNATURE_NAME]

    args, kwargs = signature.structured_input_signature
    outputs = signature.structured_outputs

    assert args == ()
    assert list(kwargs) == [LATENT_INPUT]
    assert kwargs[LATENT_INPUT].dtype == tf.float32
    assert kwargs[LATENT_INPUT].shape.as_list() == [None, LATENT_DIM]
    assert list(outputs) == [IMAGES_OUTPUT]
    assert outputs[IMAGES_OUTPUT].dtype == tf.uint8
    assert outputs[IMAGES_OUTPUT].shape.as_list() == [None, *IMAGE_SHAPE]


def test_served_images_equal_the_generator_inference_output_in_pixels(
    exported: Path, generator: keras.Model
) -> None:
    z = latents_from_seeds(range(16), LATENT_DIM)
    signature = tf.saved_model.load(str(exported)).signatures[SIGNATURE_NAME]

    served = signature(**{LATENT_INPUT: tf.constant(z)})[IMAGES_OUTPUT].numpy()
    expected = to_uint8(np.asarray(generator(z, training=False)))
    training_mode = to_uint8(np.asarray(generator(z, training=True)))

    assert served.dtype == np.uint8 and served.shape == (16, *IMAGE_SHAPE)
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
    assert np.mean(served == expected) > 0.99
    assert (
        np.abs(training_mode.astype(int) - expected.astype(int)).max() > 1
    )  # the check above is not vacuous


def test_a_latent_scale_multiplies_the_served_latents_before_the_generator(
    tmp_path: Path, generator: keras.Model
) -> None:
    version = export_generator(generator, _metadata(latent_scale=1.5), tmp_path)
    z = latents_from_seeds(range(8), LATENT_DIM)

    served = tf.saved_model.load(str(version)).signatures[SIGNATURE_NAME](z=tf.constant(z))[IMAGES_OUTPUT]
    scaled = to_uint8(np.asarray(generator(1.5 * z, training=False)))
    unscaled = to_uint8(np.asarray(generator(z, training=False)))

    assert read_metadata(version).latent_scale == 1.5
    assert np.abs(served.numpy().astype(int) - scaled.astype(int)).max() <= 1
    assert np.abs(unscaled.astype(int) - scaled.astype(int)).max() > 8  # the scale shows in the pixels


def test_metadata_describes_the_unconditional_generator(exported: Path) -> None:
    metadata = read_metadata(exported)

    assert metadata.kind == "dcgan" and metadata.name == NAME
    assert metadata.latent_dim == LATENT_DIM
    assert metadata.image_shape == IMAGE_SHAPE and metadata.channels == 3
    assert metadata.class_names is None
    assert metadata.training_config["dataset_class_names"] == ["circle", "square", "triangle"]
    assert metadata.training_config["exported_generator"] == "ema"
    assert metadata.training_config["store"] == "model_store"
    assert metadata.epochs == 3 and metadata.seed == 0
    assert metadata.latent_scale == 1.0
    assert set(metadata.framework_versions) == {"tensorflow", "keras", "numpy", "python"}


def test_versions_count_up_and_never_overwrite(tmp_path: Path, generator: keras.Model) -> None:
    first = export_generator(generator, _metadata(), tmp_path)
    first_graph = (first / "saved_model.pb").read_bytes()
    second = export_generator(generator, _metadata(), tmp_path)

    assert (first.name, second.name) == ("1", "2")
    assert list_versions(tmp_path, NAME) == [1, 2]
    assert (first / "saved_model.pb").read_bytes() == first_graph
    assert (first / COMPLETE_MARKER).is_file() and (second / COMPLETE_MARKER).is_file()


def test_incomplete_version_is_ignored_and_its_number_is_not_reused(
    tmp_path: Path, generator: keras.Model
) -> None:
    export_generator(generator, _metadata(), tmp_path)
    half_written = tmp_path / NAME / "2"
    half_written.mkdir()
    (half_written / "saved_model.pb").write_bytes(b"partial")

    assert list_versions(tmp_path, NAME) == [1]
    third = export_generator(generator, _metadata(), tmp_path)
    assert third.name == "3"
    assert list_versions(tmp_path, NAME) == [1, 3]


def test_export_rejects_metadata_that_does_not_match_the_generator(
    tmp_path: Path, generator: keras.Model
) -> None:
    wrong = _metadata().model_copy(update={"latent_dim": LATENT_DIM + 1})

    with pytest.raises(ValueError, match="latent_dim"):
        export_generator(generator, wrong, tmp_path)
    assert list_versions(tmp_path, NAME) == []


def test_mixed_precision_generator_is_served_in_float32(tmp_path: Path) -> None:
    keras.utils.set_random_seed(4)
    generator = build_generator(LATENT_DIM, IMAGE_SHAPE, dtype_policy="mixed_bfloat16")
    z = latents_from_seeds(range(8), LATENT_DIM)

    version = export_generator(generator, _metadata(), tmp_path)
    signature = tf.saved_model.load(str(version)).signatures[SIGNATURE_NAME]
    served = signature(**{LATENT_INPUT: tf.constant(z)})[IMAGES_OUTPUT].numpy()

    assert "DT_BFLOAT16" not in str(signature.graph.as_graph_def())
    expected = to_uint8(np.asarray(generator(z, training=False)))
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
