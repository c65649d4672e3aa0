"""The learned latent prior: an invertible flow with an exact log-determinant that learns non-Gaussian
latents, and a VAE exported with it that still encodes and decodes in one round trip, through the service too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.main import create_app
from genserve import store
from genserve.conventions import to_uint8
from tests.app.helpers import decode_npy
from tests.app.test_encode import encode, image_files
from tests.conftest import make_settings, wait_until_ready
from training.config import TrainConfig
from training.datasets import load_dataset
from training.export import export_checkpoint
from training.prior import (
    COUPLINGS,
    HIDDEN_UNITS,
    LatentFlow,
    coupling_masks,
    fit_prior,
    restore_prior,
    save_prior,
)
from training.run_folder import PRIOR_DIR
from training.train import TrainResult, train
from training.vae import build_decoder, build_encoder

LATENT_DIM = 4
VAE_NAME = "shapes-flow-vae"
# The flow's math does not depend on its size: unit tests use a small one, trainings the default.
SMALL = {"couplings": 6, "hidden_units": 64}


def random_flow(latent_dim: int = LATENT_DIM, seed: int = 0) -> LatentFlow:
    """A flow whose couplings and final affine are all far from the identity."""
    keras.utils.set_random_seed(seed)
    flow = LatentFlow(latent_dim, **SMALL)
    rng = np.random.RandomState(seed)
    for weight in flow.weights:
        weight.assign(rng.normal(0.0, 0.1, weight.shape).astype(np.float32))
    return flow


def ring(count: int, seed: int) -> np.ndarray:
    """2-D points on a circle of radius 3: mass where N(0, I) has little, none where it has most."""
    rng = np.random.RandomState(seed)
    angle = rng.uniform(0.0, 2.0 * np.pi, count)
    radius = 3.0 + 0.1 * rng.randn(count)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)


def two_clusters(count: int, seed: int) -> np.ndarray:
    """4-D points in two tight clusters at +-2 on every axis."""
    rng = np.random.RandomState(seed)
    signs = np.where(rng.rand(count, 1) < 0.5, -1.0, 1.0)
    return (2.0 * signs + 0.2 * rng.randn(count, 4)).astype(np.float32)


def standard_normal_log_prob(z: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(z**2, axis=1) - 0.5 * z.shape[1] * np.log(2.0 * np.pi)


def test_couplings_alternate_halves_of_the_dimensions() -> None:
    masks = coupling_masks(6, couplings=4)

    assert masks.shape == (4, 6)
    np.testing.assert_array_equal(masks[0] + masks[1], np.ones(6))
    np.testing.assert_array_equal(masks[2] + masks[3], np.ones(6))
    assert masks[0].sum() == 3


def test_the_flow_is_invertible() -> None:
    flow = random_flow()
    u = np.random.RandomState(1).randn(64, LATENT_DIM).astype(np.float32)

    z = flow.forward(u).numpy()
    back, _ = flow.inverse(z)

    assert np.abs(z - u).max() > 0.5  # far from the identity
    np.testing.assert_allclose(back.numpy(), u, atol=1e-4)


def test_log_det_matches_a_numerical_jacobian() -> None:
    flow = random_flow()
    z = np.random.RandomState(2).randn(3, LATENT_DIM).astype(np.float64)
    step = 1e-3

    _, log_det = flow.inverse(z.astype(np.float32))

    for row, point in enumerate(z):
        columns = []
        for axis in range(LATENT_DIM):
            shift = np.zeros(LATENT_DIM)
            shift[axis] = step
            ahead, _ = flow.inverse((point + shift)[None].astype(np.float32))
            behind, _ = flow.inverse((point - shift)[None].astype(np.float32))
            columns.append((ahead.numpy()[0] - behind.numpy()[0]) / (2 * step))
        jacobian = np.stack(columns, axis=1)  # d u / d z
        _, numerical = np.linalg.slogdet(jacobian)
        assert float(log_det[row]) == pytest.approx(numerical, abs=2e-2)


@pytest.mark.parametrize("points", [ring, two_clusters], ids=["ring-2d", "two-clusters-4d"])
def test_fitting_raises_the_held_out_likelihood_far_above_a_standard_normal(points: object) -> None:
    assert callable(points)
    train_points, held_out = points(4000, seed=0), points(1000, seed=1)
    keras.utils.set_random_seed(0)
    flow = LatentFlow(train_points.shape[1], **SMALL)

    losses = fit_prior(flow, train_points, epochs=12, verbose=0)

    fitted = float(np.mean(flow.log_prob(held_out)))
    # The flow beats both N(0, I) and the best Gaussian (its own unfitted start: mean and spread set per axis).
    assert fitted > float(np.mean(standard_normal_log_prob(held_out))) + 1.5
    assert losses[-1] < losses[0] - 0.5


def test_fitting_on_posteriors_draws_one_sample_of_each_per_step() -> None:
    means = two_clusters(2000, seed=0)
    keras.utils.set_random_seed(0)
    exact = LatentFlow(4, **SMALL)
    keras.utils.set_random_seed(0)
    blurred = LatentFlow(4, seed=0, **SMALL)

    on_means = fit_prior(exact, means, epochs=3, verbose=0)
    # Posteriors of standard deviation 1 around each mean: far wider than the clusters' spread of 0.2.
    on_samples = fit_prior(blurred, means, np.zeros_like(means), epochs=3, verbose=0)

    assert on_samples[-1] > on_means[-1] + 1.0


def test_posterior_in_base_maps_the_mean_exactly_and_the_variance_through_the_jacobian() -> None:
    flow = random_flow()
    rng = np.random.RandomState(3)
    z_mean = rng.randn(2, LATENT_DIM).astype(np.float32)
    z_log_var = rng.uniform(-3.0, 0.0, (2, LATENT_DIM)).astype(np.float32)

    u_mean, u_log_var = flow.posterior_in_base(z_mean, z_log_var)

    np.testing.assert_allclose(flow.forward(u_mean).numpy(), z_mean, atol=1e-4)
    for row in range(2):
        with tf.GradientTape() as tape:
            point = tf.constant(z_mean[row : row + 1])
            tape.watch(point)
            u, _ = flow.inverse(point)
        jacobian = tape.jacobian(u, point).numpy()[0, :, 0, :]
        expected = np.log(np.square(jacobian) @ np.exp(z_log_var[row]))
        np.testing.assert_allclose(u_log_var.numpy()[row], expected, rtol=1e-4, atol=1e-4)


def test_an_elementwise_flow_maps_the_posterior_exactly() -> None:
    flow = LatentFlow(LATENT_DIM, **SMALL)  # couplings at the identity: only the final elementwise affine
    flow.adapt(np.random.RandomState(4).normal(1.0, 3.0, (500, LATENT_DIM)).astype(np.float32))
    z_log_var = np.full((1, LATENT_DIM), -1.0, np.float32)

    _, u_log_var = flow.posterior_in_base(np.zeros((1, LATENT_DIM), np.float32), z_log_var)

    np.testing.assert_allclose(u_log_var.numpy(), z_log_var - 2.0 * flow.log_spread.numpy(), atol=1e-5)


# --- a VAE trained and exported with a flow prior -------------------------------------------------------


@pytest.fixture(scope="module")
def flow_vae(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    root = tmp_path_factory.mktemp("flow-vae")
    config = TrainConfig(
        model="vae",
        dataset="shapes",
        name=VAE_NAME,
        store=root / "store",
        run_dir=root / "runs" / VAE_NAME,
        epochs=3,
        batch_size=32,
        latent_dim=LATENT_DIM,
        limit=128,
        latent_prior="flow",
        prior_epochs=2,
    )
    result = train(config)
    assert result.version_dir is not None
    return result


def shapes(count: int) -> np.ndarray:
    return to_uint8(load_dataset("shapes", limit=count, seed=5).images)


def trained_networks(result: TrainResult) -> tuple[keras.Model, keras.Model]:
    """The run's last encoder and decoder, restored from its checkpoint."""
    encoder, decoder = build_encoder((28, 28, 3), LATENT_DIM), build_decoder(LATENT_DIM, (28, 28, 3))
    checkpoint = tf.train.Checkpoint(encoder=encoder, generator=decoder)
    checkpoint.restore(tf.train.latest_checkpoint(str(result.run_dir / "checkpoints"))).expect_partial()
    return encoder, decoder


@pytest.mark.parametrize(
    "sizes", [{"couplings": 3, "hidden_units": 16}, {"couplings": 6, "hidden_units": 128}]
)
def test_a_saved_flow_is_restored_with_the_sizes_it_was_fit_with(
    sizes: dict[str, int], tmp_path: Path
) -> None:
    keras.utils.set_random_seed(0)
    flow = LatentFlow(LATENT_DIM, **sizes)
    for weight in flow.weights:
        weight.assign(np.random.RandomState(1).normal(0.0, 0.1, weight.shape).astype(np.float32))
    save_prior(flow, tmp_path, {"vae_epoch": 1})
    u = np.random.RandomState(2).randn(8, LATENT_DIM).astype(np.float32)

    restored, fit = restore_prior(tmp_path, LATENT_DIM)

    assert {key: fit[key] for key in sizes} == sizes and len(restored.networks) == sizes["couplings"]
    np.testing.assert_allclose(restored.forward(u).numpy(), flow.forward(u).numpy(), rtol=1e-6)


def test_a_fit_record_without_sizes_is_restored_with_the_first_sizes(tmp_path: Path) -> None:
    flow = LatentFlow(LATENT_DIM, couplings=6, hidden_units=128)
    save_prior(flow, tmp_path, {"vae_epoch": 1})
    record = json.loads((tmp_path / "fit.json").read_text())
    (tmp_path / "fit.json").write_text(json.dumps({"vae_epoch": record["vae_epoch"]}))

    restored, _ = restore_prior(tmp_path, LATENT_DIM)

    assert len(restored.networks) == 6 and restored.networks[0].get_layer("hidden1").units == 128


def test_training_records_and_saves_the_prior(flow_vae: TrainResult) -> None:
    assert flow_vae.version_dir is not None
    metadata = store.read_metadata(flow_vae.version_dir)
    fit = json.loads((flow_vae.run_dir / PRIOR_DIR / "fit.json").read_text())

    assert metadata.training_config["latent_prior"] == "flow"
    assert metadata.training_config["prior_epochs"] == 2
    assert fit["vae_epoch"] == 3 and fit["epochs"] == 2
    assert fit["couplings"] == COUPLINGS and fit["hidden_units"] == HIDDEN_UNITS
    assert metadata.training_summary["latent_prior_fit"] == fit


def test_encode_then_generate_decodes_the_encoder_mean(flow_vae: TrainResult) -> None:
    assert flow_vae.version_dir is not None
    loaded = tf.saved_model.load(str(flow_vae.version_dir))
    encoder, decoder = trained_networks(flow_vae)
    prior, _ = restore_prior(flow_vae.run_dir / PRIOR_DIR, LATENT_DIM)
    images = shapes(16)

    posterior = loaded.signatures[store.ENCODE_SIGNATURE](**{store.IMAGES_INPUT: tf.constant(images)})
    served = loaded.signatures[store.SIGNATURE_NAME](
        **{store.LATENT_INPUT: posterior[store.LATENT_MEAN_OUTPUT]}
    )
    z_mean, _ = encoder((images.astype(np.float32) - 127.5) / 127.5)
    direct = to_uint8(np.asarray(decoder(z_mean)))

    assert np.abs(served[store.IMAGES_OUTPUT].numpy().astype(int) - direct.astype(int)).max() <= 1
    # The served latent is the flow's base point, not the encoder's mean.
    u_mean, _ = prior.inverse(z_mean)
    np.testing.assert_allclose(posterior[store.LATENT_MEAN_OUTPUT].numpy(), u_mean.numpy(), atol=1e-4)
    assert np.isfinite(posterior[store.LATENT_LOG_VAR_OUTPUT].numpy()).all()


def test_served_samples_decode_the_flow_of_standard_normal_latents(flow_vae: TrainResult) -> None:
    assert flow_vae.version_dir is not None
    loaded = tf.saved_model.load(str(flow_vae.version_dir))
    _, decoder = trained_networks(flow_vae)
    prior, _ = restore_prior(flow_vae.run_dir / PRIOR_DIR, LATENT_DIM)
    u = np.random.RandomState(6).randn(8, LATENT_DIM).astype(np.float32)

    served = loaded.signatures[store.SIGNATURE_NAME](**{store.LATENT_INPUT: tf.constant(u)})[
        store.IMAGES_OUTPUT
    ].numpy()

    expected = to_uint8(np.asarray(decoder(prior.forward(u))))
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


def test_the_export_saves_the_flow_without_its_optimizer_state(flow_vae: TrainResult) -> None:
    assert flow_vae.version_dir is not None
    saved = tf.train.list_variables(str(flow_vae.version_dir / "variables" / "variables"))
    prior, _ = restore_prior(flow_vae.run_dir / PRIOR_DIR, LATENT_DIM)
    flow_values = sum(int(np.prod(weight.shape)) for weight in prior.weights)

    names = [name for name, _ in saved]
    values = sum(int(np.prod(shape)) for name, shape in saved if "prior" in name)
    assert not [name for name in names if "optimizer" in name]
    assert values == flow_values


def test_export_checkpoint_republishes_the_same_model(flow_vae: TrainResult, tmp_path: Path) -> None:
    assert flow_vae.version_dir is not None
    again = tf.saved_model.load(str(export_checkpoint(flow_vae.run_dir, tmp_path / "store")))
    original = tf.saved_model.load(str(flow_vae.version_dir))
    u = tf.constant(np.random.RandomState(7).randn(4, LATENT_DIM).astype(np.float32))

    first, second = (
        loaded.signatures[store.SIGNATURE_NAME](**{store.LATENT_INPUT: u})[store.IMAGES_OUTPUT].numpy()
        for loaded in (original, again)
    )

    np.testing.assert_array_equal(first, second)


def test_export_checkpoint_refuses_a_prior_fit_to_another_epoch(
    flow_vae: TrainResult, tmp_path: Path
) -> None:
    steps = sorted(
        int(path.stem.removeprefix("ckpt-")) for path in (flow_vae.run_dir / "checkpoints").glob("*.index")
    )
    earlier = flow_vae.run_dir / "checkpoints" / f"ckpt-{steps[0]}"  # epoch 1's; the prior fits epoch 3's

    with pytest.raises(ValueError, match="fit to the VAE of epoch 3"):
        export_checkpoint(earlier, tmp_path / "store")


def test_resuming_a_finished_run_with_a_flow_prior_fits_and_records_it(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "model": "vae",
        "dataset": "shapes",
        "name": "shapes-vae",
        "store": tmp_path / "store",
        "run_dir": tmp_path / "run",
        "epochs": 1,
        "batch_size": 32,
        "latent_dim": LATENT_DIM,
        "limit": 64,
    }
    train(TrainConfig(**options, latent_prior="normal"))

    resumed = train(TrainConfig(**options, latent_prior="flow", prior_epochs=1, resume=True))
    exported = export_checkpoint(tmp_path / "run", tmp_path / "store")

    assert resumed.version_dir is not None and resumed.epochs_completed == 1
    for version in (resumed.version_dir, exported):
        assert store.read_metadata(version).training_summary["latent_prior_fit"]["vae_epoch"] == 1
    assert store.read_metadata(exported).training_config["latent_prior"] == "flow"


@pytest.fixture(scope="module")
def flow_client(flow_vae: TrainResult) -> Iterator[TestClient]:
    store = flow_vae.run_dir.parent.parent / "store"
    with TestClient(create_app(make_settings(store))) as client:
        wait_until_ready(client)
        yield client


def test_the_service_needs_no_change_for_a_flow_prior(flow_client: TestClient) -> None:
    images = shapes(3)
    latents = encode(flow_client, images, model=VAE_NAME)
    generated = flow_client.post(
        "/generate", json={"model": VAE_NAME, "latents": latents.tolist(), "format": "npy"}
    )
    reconstructed = flow_client.post(
        "/reconstruct",
        params={"model": VAE_NAME, "format": "npy"},
        files=image_files(images),
    )

    assert generated.status_code == 200, generated.text
    assert reconstructed.status_code == 200, reconstructed.text
    difference = decode_npy(generated.content).astype(int) - decode_npy(reconstructed.content).astype(int)
    assert np.abs(difference).max() <= 1
    assert flow_client.post("/generate", params={"model": VAE_NAME, "n": 4, "seed": 1}).status_code == 200


def test_flow_options_belong_to_vaes() -> None:
    with pytest.raises(ValueError, match="latent_prior only applies to model 'vae'"):
        TrainConfig(dataset="shapes", name="g", latent_prior="flow")
    with pytest.raises(ValueError, match="prior_epochs only applies to model 'vae'"):
        TrainConfig(dataset="shapes", name="g", prior_epochs=5)
    with pytest.raises(ValueError, match="unknown latent prior 'gmm'"):
        TrainConfig(model="vae", dataset="shapes", name="v", latent_prior="gmm")
    with pytest.raises(ValueError, match="prior_epochs must be an integer of at least 1"):
        TrainConfig(model="vae", dataset="shapes", name="v", prior_epochs=0)


def test_a_flow_prior_takes_the_end_of_the_time_budget() -> None:
    flow = TrainConfig(model="vae", dataset="shapes", name="v", latent_prior="flow", time_budget=10)
    normal = TrainConfig(model="vae", dataset="shapes", name="v", latent_prior="normal", time_budget=10)

    assert flow.network_time_budget == pytest.approx(9.0)
    assert normal.network_time_budget == 10


def test_runs_saved_before_latent_priors_keep_the_standard_normal() -> None:
    saved = TrainConfig(model="vae", dataset="shapes", name="v").to_dict()
    del saved["latent_prior"], saved["prior_epochs"]

    assert TrainConfig.from_dict(saved).latent_prior == "normal"
