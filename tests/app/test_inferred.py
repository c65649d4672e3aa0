"""Bare TensorFlow Serving SavedModels (no genserve.json) copied into a running service's store: served as they
are, with what they are inferred from their signature and one probe call."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.main import create_app
from genserve.conventions import latents_from_seeds
from genserve.store import BARE_VERSION_SETTLE_S, is_complete
from tests.app.helpers import max_abs_diff
from tests.app.test_imported import generated, pixels
from tests.conftest import TINY_MODEL, make_settings, wait_until_ready
from tests.training import foreign_models


@pytest.fixture(scope="module")
def store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny store, which bare versions are copied into while the service runs."""
    copy = tmp_path_factory.mktemp("bare") / "model_store"
    shutil.copytree(tiny_store, copy)
    return copy


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[TestClient]:
    with TestClient(
        create_app(make_settings(store, default_model=TINY_MODEL, poll_interval_s=0.2))
    ) as test_client:
        wait_until_ready(test_client)
        yield test_client


def version_listed(client: TestClient, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for model in client.get("/models").json()["models"]:
            versions = [v for v in model["versions"] if v["status"] in ("available", "failed")]
            if model["name"] == name and versions:
                return dict(versions[0])
        time.sleep(0.1)
    raise TimeoutError(f"{name} did not appear: {client.get('/models').json()}")


def test_a_bare_savedmodel_copied_in_is_served_and_marked_inferred(
    client: TestClient, store: Path, tmp_path: Path
) -> None:
    model = foreign_models.fit_to_shapes(foreign_models.tutorial_generator())
    model.export(tmp_path / "exported", verbose=False)

    shutil.copytree(tmp_path / "exported", store / "notebook-gan" / "1")
    version = version_listed(client, "notebook-gan")

    assert version["status"] == "available", version
    assert version["source"] == "inferred"
    assert (version["kind"], version["latent_dim"], version["image_shape"]) == ("dcgan", 100, [28, 28, 1])
    assert version["origin"]["output_range"] == "tanh"
    assert sorted(version["origin"]["inferred"]) == ["image_shape", "latent_dim", "output_range"]
    expected = pixels(model(latents_from_seeds(range(11, 14), 100), training=False), 127.5, 127.5)
    assert max_abs_diff(generated(client, "notebook-gan", seed=11, n=3), expected) <= 1


def test_a_savedmodel_that_is_not_a_generator_fails_naming_the_import_command(
    client: TestClient, store: Path, tmp_path: Path
) -> None:
    latent = keras.Input(shape=(4,))
    keras.Model(latent, keras.layers.Dense(10)(latent)).export(tmp_path / "classifier", verbose=False)

    shutil.copytree(tmp_path / "classifier", store / "classifier" / "1")
    version = version_listed(client, "classifier")

    assert version["status"] == "failed"
    assert "does not look like an image generator" in version["error"]
    assert "python -m training import" in version["error"]


def test_a_bare_folder_still_changing_is_not_ready(tmp_path: Path) -> None:
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "1"))

    assert not is_complete(tmp_path / "1")
    assert is_complete_after(tmp_path / "1", BARE_VERSION_SETTLE_S + 0.5)
    (tmp_path / "1" / "variables" / "extra").write_bytes(np.zeros(4).tobytes())
    assert not is_complete(tmp_path / "1")


def is_complete_after(path: Path, seconds: float) -> bool:
    time.sleep(seconds)
    return is_complete(path)
