"""GET /models and /models/{name}, including failed versions and evaluation numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.serving.runtime import configure_devices
from genserve import store
from genserve.store import EvaluationRecord
from tests.app.test_generate import assert_error
from tests.conftest import TINY_LATENT_DIM, TINY_MODEL, make_settings, wait_until_ready


def test_models_lists_the_loaded_model(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    body = response.json()
    assert body["default_model"] == TINY_MODEL
    # Whatever this machine offers (GPU or CPU), /models reports the device the service chose.
    assert body["device"] == configure_devices().name
    [model] = body["models"]
    assert model["name"] == TINY_MODEL and model["default"] is True and model["latest_available"] == 1
    [version] = model["versions"]
    assert version["status"] == "available"
    assert version["kind"] == "dcgan"
    assert version["latent_dim"] == TINY_LATENT_DIM
    assert version["image_shape"] == [28, 28, 3]
    assert version["dataset"] == "shapes"
    assert version["device"] == body["device"]


def test_model_detail_and_unknown_model(client: TestClient) -> None:
    response = client.get(f"/models/{TINY_MODEL}")
    assert response.status_code == 200
    assert response.json()["versions"][0]["version"] == 1
    assert_error(client.get("/models/ghost"), 404, "model_not_found", "ghost")
    assert_error(client.get("/models/Bad..Name"), 422, "invalid_parameter", "model")


def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_models_show_evaluation_numbers(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    record = EvaluationRecord(dataset="shapes", num_samples=100, fid=12.5, inception_score=2.25, real_fid=1.0)
    store.write_evaluation(store.version_dir(root, TINY_MODEL, 1), record)
    with TestClient(create_app(make_settings(root))) as test_client:
        wait_until_ready(test_client)
        evaluation = test_client.get(f"/models/{TINY_MODEL}").json()["versions"][0]["evaluation"]
    assert evaluation["fid"] == 12.5 and evaluation["inception_score"] == 2.25


def test_corrupt_version_is_reported_failed_and_not_served(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    broken = copy_store(store.version_dir(root, TINY_MODEL, 1), root / "broken" / "1")
    (broken / "saved_model.pb").write_bytes(b"not a saved model")
    with TestClient(create_app(make_settings(root, default_model=TINY_MODEL))) as test_client:
        wait_until_ready(test_client)
        detail = test_client.get("/models/broken").json()
        assert detail["versions"][0]["status"] == "failed"
        assert "cannot be loaded" in detail["versions"][0]["error"]
        response = test_client.post("/generate", params={"model": "broken"})
        assert_error(response, 503, "model_not_ready", "broken")
        assert test_client.post("/generate", params={"n": 1}).status_code == 200


def test_incomplete_version_is_ignored(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    unfinished = copy_store(store.version_dir(root, TINY_MODEL, 1), store.version_dir(root, TINY_MODEL, 2))
    (unfinished / store.COMPLETE_MARKER).unlink()
    with TestClient(create_app(make_settings(root))) as test_client:
        wait_until_ready(test_client)
        response = test_client.post("/generate", params={"n": 1, "seed": 0})
        assert response.headers["x-model-version"] == "1"
        assert [v["version"] for v in test_client.get("/models").json()["models"][0]["versions"]] == [1]
