from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve.conventions import to_uint8
from genserve.store import EVALUATION_FILE, IMAGES_OUTPUT, read_evaluation
from tests.training.savedmodels import LATENT_DIM, module_metadata, publish_module
from training.config import TrainConfig
from training.datasets import ImageDataset, load_dataset
from training.evaluate import evaluate_version
from training.evaluate_cli import evaluate_command, sweep_command
from training.export import export_generator
from training.metadata import build_metadata
from training.networks import build_generator
from training.run_info import RunInfo

# --- tiny SavedModels ------------------------------------------------------------------------------------


class _NoiseGenerator(tf.Module):
    """Random projection of the latent to an image: a generator that learned nothing."""

    def __init__(self) -> None:
        super().__init__()
        initial = np.random.RandomState(0).normal(size=(LATENT_DIM, 28 * 28 * 3)).astype(np.float32)
        self.kernel = tf.Variable(initial)

    @tf.function(input_signature=[tf.TensorSpec([None, LATENT_DIM], tf.float32, name="z")])
    def generate(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.tanh(tf.matmul(z, self.kernel))
        images = tf.cast(tf.round((pixels + 1.0) * 127.5), tf.uint8)
        return {IMAGES_OUTPUT: tf.reshape(images, [-1, 28, 28, 3])}


@pytest.fixture(scope="module")
def noise_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    metadata = module_metadata("noise", "dcgan")
    return publish_module(tmp_path_factory.mktemp("store"), _NoiseGenerator(), metadata)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


# --- end to end ------------------------------------------------------------------------------------------


def test_evaluate_command_writes_a_record_where_real_beats_noise(
    noise_version: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = evaluate_command(
        noise_version, dataset="shapes", data_path=None, num_samples=200, cache_dir=cache_dir, seed=0
    )

    assert (noise_version / EVALUATION_FILE).is_file()
    assert read_evaluation(noise_version) == record
    assert record.dataset == "shapes" and record.num_samples == 200
    assert record.details["real_num_samples"] == 200
    numbers = [record.fid, record.inception_score, record.real_fid, record.real_inception_score]
    assert all(value is not None and math.isfinite(value) for value in numbers)
    assert record.real_fid is not None and record.real_fid < record.fid
    assert record.real_inception_score is not None and record.real_inception_score > 2.5
    assert record.classifier_accuracy is not None and record.classifier_accuracy > 0.9
    assert "FID" in capsys.readouterr().out


def test_second_evaluation_reuses_the_cached_classifier(
    noise_version: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = load_dataset("shapes")
    held_out = load_dataset("shapes", split="test", limit=50)
    evaluate_version(noise_version, train=train, held_out=held_out, num_samples=100, cache_dir=cache_dir)

    with caplog.at_level(logging.INFO, logger="training.classifier"):
        record = evaluate_version(
            noise_version, train=train, held_out=held_out, num_samples=100, cache_dir=cache_dir
        )

    assert "reusing cached classifier" in caplog.text
    assert len(list((cache_dir / "classifiers").glob("*.keras"))) == 1
    assert record.details["real_num_samples"] == 50  # capped by the held-out set


def test_evaluation_needs_labels(noise_version: Path, tmp_path: Path) -> None:
    images = np.zeros((4, 28, 28, 3), dtype=np.float32)
    unlabelled = ImageDataset("folder:x", images, None, None)

    with pytest.raises(ValueError, match="labelled dataset"):
        evaluate_version(noise_version, train=unlabelled, held_out=unlabelled, cache_dir=tmp_path)


def test_generated_shape_must_match_the_dataset(noise_version: Path, cache_dir: Path) -> None:
    train = load_dataset("shapes", image_size=16)

    with pytest.raises(ValueError, match="image_size"):
        evaluate_version(noise_version, train=train, held_out=train, num_samples=10, cache_dir=cache_dir)


class _ClassPicker(tf.Module):
    """A perfect conditional generator: one real image of the requested class, whatever the latent."""

    def __init__(self, examples: np.ndarray) -> None:
        super().__init__()
        self.examples = tf.constant(examples)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, LATENT_DIM], tf.float32, name="z"),
            tf.TensorSpec([None], tf.int32, name="label"),
        ]
    )
    def generate(self, z: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
        del z
        return {IMAGES_OUTPUT: tf.gather(self.examples, label)}


def test_conditional_models_report_how_often_images_show_the_requested_class(
    cache_dir: Path, tmp_path: Path
) -> None:
    train = load_dataset("shapes")
    held_out = load_dataset("shapes", split="test", limit=50)
    labels = held_out.labels
    assert labels is not None
    firsts = [int(np.flatnonzero(labels == index)[0]) for index in range(3)]
    examples = to_uint8(held_out.images[firsts])
    metadata = module_metadata("picker", "cdcgan", class_names=["circle", "square", "triangle"])
    version = publish_module(tmp_path, _ClassPicker(examples), metadata)
    swapped = publish_module(tmp_path, _ClassPicker(examples[[1, 2, 0]]), metadata)

    record = evaluate_version(version, train=train, held_out=held_out, num_samples=30, cache_dir=cache_dir)
    wrong = evaluate_version(swapped, train=train, held_out=held_out, num_samples=30, cache_dir=cache_dir)

    assert record.details["label_accuracy"] == 1.0
    assert wrong.details["label_accuracy"] == 0.0


_PIXELS = 28 * 28 * 3


class _IdentityVAE(tf.Module):
    """A VAE whose latent is the image itself: perfect reconstructions, noise from the prior."""

    @tf.function(input_signature=[tf.TensorSpec([None, _PIXELS], tf.float32, name="z")])
    def generate(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.clip_by_value(tf.round((z + 1.0) * 127.5), 0.0, 255.0)
        return {IMAGES_OUTPUT: tf.reshape(tf.cast(pixels, tf.uint8), [-1, 28, 28, 3])}

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 3], tf.uint8, name="images")])
    def encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        flat = tf.reshape(tf.cast(images, tf.float32) / 127.5 - 1.0, [-1, _PIXELS])
        return {"z_mean": flat, "z_log_var": tf.zeros_like(flat)}


def test_vae_evaluation_scores_its_reconstructions_of_held_out_images(
    cache_dir: Path, tmp_path: Path
) -> None:
    module = _IdentityVAE()
    metadata = module_metadata("identity", "vae", latent_dim=_PIXELS)
    version = publish_module(tmp_path, module, metadata, encode=module.encode)
    train = load_dataset("shapes")
    held_out = load_dataset("shapes", split="test", limit=100)

    record = evaluate_version(version, train=train, held_out=held_out, num_samples=100, cache_dir=cache_dir)

    details = record.details
    assert details["reconstruction_mean_abs_error"] < 0.51  # only the uint8 rounding of held-out pixels
    assert details["reconstruction_class_agreement"] >= 0.9
    assert record.real_fid is not None
    assert details["reconstruction_fid"] == pytest.approx(record.real_fid, rel=0.01)  # uint8 rounding only
    assert record.fid > 10 * details["reconstruction_fid"]  # prior samples of this "VAE" are noise


# --- latent scales ---------------------------------------------------------------------------------------


def _exported_dcgan(store: Path, latent_scale: float) -> Path:
    keras.utils.set_random_seed(5)
    generator = build_generator(LATENT_DIM, (28, 28, 3))
    info = RunInfo(TrainConfig(dataset="shapes", name="tiny", latent_dim=LATENT_DIM), (28, 28, 3), None)
    return export_generator(
        generator, build_metadata(info, epochs=0, averaged=False, latent_scale=latent_scale), store
    )


def test_a_sweep_scores_each_scale_as_if_the_version_were_published_with_it(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unscaled, scaled = _exported_dcgan(tmp_path, 1.0), _exported_dcgan(tmp_path, 3.0)
    options: dict[str, Any] = {
        "dataset": "shapes",
        "data_path": None,
        "num_samples": 100,
        "cache_dir": cache_dir,
        "seed": 1,
    }

    swept = sweep_command(unscaled, [1.0, 3.0], **options)
    table = capsys.readouterr().out
    own = [evaluate_command(version, **options) for version in (unscaled, scaled)]

    assert [record.details["latent_scale"] for record in swept] == [1.0, 3.0]
    assert [record.fid for record in swept] == pytest.approx([record.fid for record in own], rel=1e-4)
    assert swept[0].fid != pytest.approx(swept[1].fid, rel=0.01)
    lowest = "1 " if swept[0].fid < swept[1].fid else "3 "
    assert [line for line in table.splitlines() if "<- lowest FID" in line][0].startswith(lowest)
    assert table.splitlines()[-1].startswith("real")


def test_a_sweep_stores_nothing_and_needs_a_version_that_holds_its_scale(
    noise_version: Path, cache_dir: Path, tmp_path: Path
) -> None:
    version = _exported_dcgan(tmp_path, 1.0)
    sweep_command(
        version, [1.2], dataset="shapes", data_path=None, num_samples=20, cache_dir=cache_dir, seed=0
    )

    assert not (version / EVALUATION_FILE).exists()
    with pytest.raises(
        ValueError, match="published before latent scales existed: export its checkpoint again"
    ):
        sweep_command(
            noise_version,
            [1.2],
            dataset="shapes",
            data_path=None,
            num_samples=20,
            cache_dir=cache_dir,
            seed=0,
        )
