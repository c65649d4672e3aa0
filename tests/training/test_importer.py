"""`python -m training import`: what it publishes, and each refusal as a one-line error that names the fix."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from genserve.store import COMPLETE_MARKER, METADATA_FILE, list_versions
from tests.training import foreign_models
from training.cli import EXIT_BAD_ARGUMENTS
from training.cli import main as training_main
from training.provenance import content_hash


def run_import(
    capsys: pytest.CaptureFixture[str], source: Path, store: Path, *options: str
) -> tuple[int, str]:
    status = training_main(["import", str(source), "--name", "m", "--store", str(store), *options])
    return status, capsys.readouterr().err.strip()


def refused(capsys: pytest.CaptureFixture[str], source: Path, store: Path, *options: str) -> str:
    status, error = run_import(capsys, source, store, *options)
    assert status == EXIT_BAD_ARGUMENTS
    assert error.startswith("python -m training import: error: ") and "\n" not in error
    assert list_versions(store, "m") == []
    return error.removeprefix("python -m training import: error: ")


def saved(model: keras.Model, folder: Path, name: str = "model") -> Path:
    return foreign_models.save_keras(model, folder, name)


def test_a_tutorial_generator_is_published_with_what_was_inferred(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = saved(foreign_models.tutorial_generator(), tmp_path, "generator")

    status, _ = run_import(capsys, source, tmp_path / "store")

    assert status == 0
    version = tmp_path / "store" / "m" / "1"
    assert (version / COMPLETE_MARKER).is_file()
    metadata = json.loads((version / METADATA_FILE).read_text())
    assert (metadata["kind"], metadata["latent_dim"], metadata["image_shape"]) == ("dcgan", 100, [28, 28, 1])
    assert metadata["source"] == "imported"
    origin = metadata["origin"]
    assert (origin["file"], origin["format"], origin["sha256"]) == (
        "generator.keras",
        "keras",
        content_hash(source),
    )
    assert origin["output_range"] == "tanh" and origin["output_range_inferred"] is True
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"z"}
    assert signature.structured_outputs["images"].dtype == tf.uint8


class Doubled(layers.Layer):
    """A custom layer a notebook might define."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs * 2.0


def test_an_unregistered_custom_layer_is_named_and_custom_objects_loads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latent = keras.Input(shape=(4,))
    image = layers.Reshape((2, 2, 1))(layers.Activation("tanh")(Doubled()(latent)))
    source = saved(keras.Model(latent, image), tmp_path)
    definitions = tmp_path / "layers.py"
    definitions.write_text(
        "import keras\n\n\nclass Doubled(keras.layers.Layer):\n    def call(self, inputs):\n"
        "        return inputs * 2.0\n"
    )

    error = refused(capsys, source, tmp_path / "store")

    assert "'Doubled'" in error and "--custom-objects" in error
    assert run_import(capsys, source, tmp_path / "store", "--custom-objects", str(definitions))[0] == 0


def test_two_latent_like_inputs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = keras.Input(shape=(4,), name="a"), keras.Input(shape=(4,), name="b")
    image = layers.Reshape((2, 2, 1))(layers.Add()([first, second]))
    error = refused(capsys, saved(keras.Model([first, second], image), tmp_path), tmp_path / "store")

    assert error.startswith("more than one latent-like input (a float32 [None, 4], b float32 [None, 4])")
    assert "--label-input" in error


def test_a_dynamic_image_size_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tf.Module()
    module.serve = tf.function(
        lambda z: {"image": tf.zeros([tf.shape(z)[0], tf.cast(z[0, 0] + 3, tf.int32), 4, 1])},
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name="z")],
    )
    tf.saved_model.save(module, str(tmp_path / "dynamic"), signatures={"serving_default": module.serve})

    error = refused(capsys, tmp_path / "dynamic", tmp_path / "store")

    assert "sizes known only when called" in error and "must be fixed" in error


def test_an_output_that_is_not_an_image_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latent = keras.Input(shape=(4,))
    error = refused(
        capsys, saved(keras.Model(latent, layers.Dense(10)(latent)), tmp_path), tmp_path / "store"
    )

    assert error.startswith("the model's outputs (") and "are not one image [None, H, W, C]" in error


def test_nan_outputs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latent = keras.Input(shape=(4,))
    image = layers.Reshape((2, 2, 1))(layers.Lambda(lambda z: z * np.nan)(latent))
    model = keras.Model(latent, image)
    model.export(tmp_path / "nan", verbose=False)

    assert "NaN" in refused(capsys, tmp_path / "nan", tmp_path / "store")


def test_outputs_out_of_every_range_are_refused_with_what_was_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latent = keras.Input(shape=(4,))
    image = layers.Reshape((2, 2, 1))(layers.Rescaling(3.0)(latent))

    error = refused(capsys, saved(keras.Model(latent, image), tmp_path), tmp_path / "store")

    assert error.startswith("outputs span -") and "pass --output-range or rescale your model" in error


def test_a_class_input_needs_its_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = saved(foreign_models.conditional_generator(), tmp_path)

    assert "--label-input" in refused(capsys, source, tmp_path / "store")
    assert "--classes N" in refused(capsys, source, tmp_path / "store", "--label-input", "digit")
    assert "is not an input of the model" in refused(capsys, source, tmp_path / "store", "--label-input", "x")


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")

    assert "a Keras .keras file, a Keras 2 .h5 file, or a SavedModel folder" in refused(
        capsys, notes, tmp_path
    )
