"""Shared fixtures: tiny real models trained on procedural data into a temporary store."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from genserve.console import LOG_LEVEL_VARIABLE
from tests.training.text.tiny import TINY_TEXT_MODEL, tiny_text_run_dir, train_tiny_text
from training.config import TrainConfig
from training.train import train

# Services started by tests (in this process or as child processes) serve with TensorFlow's own model call: XLA
# compilations in the background would only load the machine. The tests of compiled calls turn them on.
os.environ["GENSERVE_COMPILED_CALLS"] = "off"
_SESSION_LOG_LEVEL = os.environ.get(LOG_LEVEL_VARIABLE)

TINY_LATENT_DIM = 16
TINY_MODEL = "shapes-dcgan"
TINY_CONDITIONAL_MODEL = "shapes-cdcgan"
TINY_VAE = "shapes-vae"


def train_tiny(
    store: Path,
    run_root: Path,
    name: str = TINY_MODEL,
    seed: int = 0,
    model: str = "dcgan",
    *,
    epochs: int = 1,
    limit: int = 64,
) -> Path:
    """Train `model` for `epochs` on `limit` procedural shapes and publish it; returns the version folder."""
    config = TrainConfig(
        model=model,
        dataset="shapes",
        name=name,
        store=store,
        epochs=epochs,
        batch_size=32,
        # The tutorial-width discriminator: one epoch of the wider default leaves the tiny generator near-flat grey,
        # and the serving tests need images that differ from seed to seed.
        d_width=1,
        latent_dim=TINY_LATENT_DIM,
        limit=limit,
        seed=seed,
        run_dir=run_root / name,
    )
    result = train(config)
    if result.version_dir is None:
        raise RuntimeError("training did not export a version")
    return result.version_dir


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one tiny trained model, `shapes-dcgan` version 1 (read-only for tests)."""
    root = tmp_path_factory.mktemp("store")
    train_tiny(root / "model_store", root / "runs")
    return root / "model_store"


@pytest.fixture(scope="session")
def tiny_text_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny char-rnn's version folder, trained once per session on the procedural grammar."""
    root = tmp_path_factory.mktemp("text-store")
    return train_tiny_text(
        root / "model_store", tiny_text_run_dir(root / "model_store" / TINY_TEXT_MODEL / "1")
    )


@pytest.fixture(scope="session")
def tiny_conditional_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one tiny conditional model, `shapes-cdcgan` version 1 (classes circle, square, triangle)."""
    root = tmp_path_factory.mktemp("conditional-store")
    train_tiny(root / "model_store", root / "runs", name=TINY_CONDITIONAL_MODEL, model="cdcgan")
    return root / "model_store"


@pytest.fixture(scope="session")
def tiny_vae_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one tiny VAE, `shapes-vae` version 1, trained long enough to reconstruct shapes."""
    root = tmp_path_factory.mktemp("vae-store")
    train_tiny(root / "model_store", root / "runs", name=TINY_VAE, model="vae", epochs=15, limit=256)
    return root / "model_store"


@pytest.fixture(autouse=True)
def _tensorflow_log_level_kept() -> Iterator[None]:
    """Commands run in this process (`training.cli.main`) quiet TensorFlow by setting TF_CPP_MIN_LOG_LEVEL; a
    service a later test starts must not inherit it, or it would take the level as the user's choice and skip its
    own quiet start-up. (Module fixtures run such commands before a test starts, so the value to keep is the one
    the session started with.)"""
    yield
    if _SESSION_LOG_LEVEL is None:
        os.environ.pop(LOG_LEVEL_VARIABLE, None)
    else:
        os.environ[LOG_LEVEL_VARIABLE] = _SESSION_LOG_LEVEL


def wait_until_ready(client: TestClient, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"service not ready after {timeout_s} s: {client.get('/models').json()}")


def make_settings(store: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"model_store": store, "max_delay_ms": 2.0, **overrides}
    return Settings.model_validate(values)


@pytest.fixture(scope="module")
def client(tiny_store: Path) -> Iterator[TestClient]:
    """The real app with its lifespan over the tiny store, once its model is ready."""
    with TestClient(create_app(make_settings(tiny_store))) as test_client:
        wait_until_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def conditional_client(tiny_conditional_store: Path) -> Iterator[TestClient]:
    """The real app over the tiny conditional store, once its model is ready."""
    with TestClient(create_app(make_settings(tiny_conditional_store))) as test_client:
        wait_until_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def vae_client(tiny_vae_store: Path) -> Iterator[TestClient]:
    """The real app over the tiny VAE store, once its model is ready."""
    with TestClient(create_app(make_settings(tiny_vae_store))) as test_client:
        wait_until_ready(test_client)
        yield test_client
