"""The VAE: shapes, losses, training, checkpoints, and export with its encoder signature."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from genserve.conventions import to_uint8
from genserve.store import (
    ENCODE_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_OUTPUT,
    LATENT_INPUT,
    LATENT_LOG_VAR_OUTPUT,
    LATENT_MEAN_OUTPUT,
    SIGNATURE_NAME,
    read_metadata,
)
from tests.conftest import TINY_LATENT_DIM, TINY_VAE
from training.cli import main
from training.config import TrainConfig
from training.datasets import load_dataset
from training.export import export_checkpoint, export_generator
from training.vae import VAE, build_decoder, build_encoder, kl_divergence, logits_model, reconstruction_loss

LATENT_DIM = 8


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3), (64, 3)])
def test_encoder_and_decoder_shapes(size: int, channels: int) -> None:
    encoder = build_encoder((size, size, channels), LATENT_DIM)
    decoder = build_decoder(LATENT_DIM, (size, size, channels))
    images = np.random.RandomState(0).uniform(-1, 1, (2, size, size, channels)).astype(np.float32)

    z_mean, z_log_var = encoder(images)
    decoded = np.asarray(decoder(z_mean))

    assert z_mean.shape == z_log_var.shape == (2, LATENT_DIM)
    assert decoded.shape == (2, size, size, channels)
    assert decoded.min() >= -1.0 and decoded.max() <= 1.0


def test_decoder_output_is_the_bernoulli_mean_of_its_logits() -> None:
    decoder = build_decoder(LATENT_DIM, (28, 28, 1))
    z = np.random.RandomState(1).randn(3, LATENT_DIM).astype(np.float32)

    logits = np.asarray(logits_model(decoder)(z))
    images = np.asarray(decoder(z))

    np.testing.assert_allclose(images, 2.0 / (1.0 + np.exp(-logits)) - 1.0, atol=1e-5)


def test_losses_match_their_formulas() -> None:
    targets = np.array([[[[1.0], [0.0]]]], dtype=np.float32)  # one 1x2 image
    logits = np.array([[[[2.0], [-1.0]]]], dtype=np.float32)
    expected_bce = np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))
    assert float(reconstruction_loss(targets, logits)) == pytest.approx(expected_bce, rel=1e-5)

    mean = np.array([[0.0, 0.0], [1.0, -2.0]], dtype=np.float32)
    log_var = np.array([[0.0, 0.0], [np.log(4.0), 0.0]], dtype=np.float32)
    # KL of N(0, 1) is 0; of N(1, 4) it is 0.5 * (4 + 1 - 1 - ln 4), of N(-2, 1) it is 0.5 * 4.
    second = 0.5 * (4.0 + 1.0 - 1.0 - np.log(4.0)) + 2.0
    assert float(kl_divergence(mean, log_var)) == pytest.approx(second / 2, rel=1e-5)


def test_vae_options_are_validated() -> None:
    with pytest.raises(ValueError, match="loss, spectral_norm only apply to GANs"):
        TrainConfig(model="vae", dataset="shapes", name="v", loss="hinge", spectral_norm=True)
    with pytest.raises(ValueError, match="kl_weight only applies to model 'vae'"):
        TrainConfig(model="dcgan", dataset="shapes", name="g", kl_weight=0.5)
    with pytest.raises(ValueError, match="kl_weight must be positive"):
        TrainConfig(model="vae", dataset="shapes", name="v", kl_weight=0.0)


def test_vae_gets_its_own_optimiser_defaults_unless_told_otherwise() -> None:
    default = TrainConfig(model="vae", dataset="shapes", name="v")
    told = TrainConfig(model="vae", dataset="shapes", name="v", lr_g=5e-4)

    assert (default.lr_g, default.beta_1, default.ema_decay) == (1e-3, 0.9, 0.0)
    assert told.lr_g == 5e-4


def test_training_exports_decoder_and_encoder(tiny_vae_store: Path) -> None:
    version_dir = tiny_vae_store / TINY_VAE / "1"
    metadata = read_metadata(version_dir)
    loaded = tf.saved_model.load(str(version_dir))

    assert metadata.kind == "vae" and metadata.has_encoder and metadata.class_names is None
    assert set(loaded.signatures) == {SIGNATURE_NAME, ENCODE_SIGNATURE}
    encode = loaded.signatures[ENCODE_SIGNATURE]
    assert set(encode.structured_outputs) == {LATENT_MEAN_OUTPUT, LATENT_LOG_VAR_OUTPUT}
    assert encode.structured_input_signature[1][IMAGES_INPUT].dtype == tf.uint8


def test_exported_round_trip_beats_a_random_latent(tiny_vae_store: Path) -> None:
    loaded = tf.saved_model.load(str(tiny_vae_store / TINY_VAE / "1"))
    images = to_uint8(load_dataset("shapes", limit=32, seed=7).images)

    posterior = loaded.signatures[ENCODE_SIGNATURE](**{IMAGES_INPUT: tf.constant(images)})
    decode = loaded.signatures[SIGNATURE_NAME]
    reconstructed = decode(**{LATENT_INPUT: posterior[LATENT_MEAN_OUTPUT]})[IMAGES_OUTPUT].numpy()
    random_z = tf.random.stateless_normal((len(images), TINY_LATENT_DIM), seed=(1, 2))
    random = decode(**{LATENT_INPUT: random_z})[IMAGES_OUTPUT].numpy()

    def error(made: np.ndarray) -> float:
        return float(np.abs(made.astype(np.float64) - images).mean())

    assert error(reconstructed) < 0.75 * error(random)


def test_run_history_shows_learning(tiny_vae_store: Path) -> None:
    history = json.loads((tiny_vae_store.parent / "runs" / TINY_VAE / "history.json").read_text())["epochs"]
    assert history[-1]["reconstruction_loss"] < 0.9 * history[0]["reconstruction_loss"]


def test_export_checkpoint_republishes_the_same_vae(tiny_vae_store: Path, tmp_path: Path) -> None:
    run_dir = tiny_vae_store.parent / "runs" / TINY_VAE
    version_dir = export_checkpoint(run_dir, tmp_path / "store")
    original = tf.saved_model.load(str(tiny_vae_store / TINY_VAE / "1"))
    again = tf.saved_model.load(str(version_dir))
    images = to_uint8(load_dataset("shapes", limit=4, seed=3).images)

    for loaded in (original, again):
        assert ENCODE_SIGNATURE in loaded.signatures
    first = original.signatures[ENCODE_SIGNATURE](**{IMAGES_INPUT: tf.constant(images)})[LATENT_MEAN_OUTPUT]
    second = again.signatures[ENCODE_SIGNATURE](**{IMAGES_INPUT: tf.constant(images)})[LATENT_MEAN_OUTPUT]
    np.testing.assert_allclose(first.numpy(), second.numpy(), atol=1e-5)


def test_export_refuses_a_vae_without_its_encoder(tiny_vae_store: Path, tmp_path: Path) -> None:
    metadata = read_metadata(tiny_vae_store / TINY_VAE / "1")
    decoder = build_decoder(metadata.latent_dim, metadata.image_shape)

    with pytest.raises(ValueError, match="exported with its encoder"):
        export_generator(decoder, metadata, tmp_path / "store")


def test_a_vae_cannot_be_published_with_a_latent_scale(
    tiny_vae_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tiny_vae_store.parent / "runs" / TINY_VAE

    code = main(["export", str(run_dir), "--store", str(tmp_path / "store"), "--latent-scale", "1.2"])

    error = capsys.readouterr().err.strip()
    assert code == 2 and not (tmp_path / "store").exists()
    assert error == (
        "python -m training export: error: latent_scale only applies to GANs (dcgan, cdcgan, specgan), not to 'vae': a "
        "VAE's encoder shares its latents"
    )


def test_vae_train_step_reports_its_losses() -> None:
    vae = VAE(
        build_encoder((28, 28, 1), LATENT_DIM), build_decoder(LATENT_DIM, (28, 28, 1)), latent_dim=LATENT_DIM
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.RandomState(0).uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)

    logs = vae.train_step(tf.constant(images))

    assert set(logs) == {"loss", "reconstruction_loss", "kl_loss"}
    assert float(logs["loss"]) == pytest.approx(
        float(logs["reconstruction_loss"]) + float(logs["kl_loss"]), rel=1e-4
    )
