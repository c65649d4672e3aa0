"""Liveness, readiness through loading, and offline API docs."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.image import runtime as image_runtime
from app.main import create_app
from tests.conftest import make_settings, wait_until_ready


def test_readyz_is_503_until_the_default_model_has_warmed_up(
    tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    original = image_runtime.ImageRuntime.warm_up

    def held_warm_up(self: image_runtime.ImageRuntime, batch_sizes: list[int]) -> float:
        release.wait(timeout=30)
        return original(self, batch_sizes)

    monkeypatch.setattr(image_runtime.ImageRuntime, "warm_up", held_warm_up)
    with TestClient(create_app(make_settings(tiny_store))) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "not_ready"
        generate = client.post("/generate", params={"n": 1})
        assert generate.status_code == 503
        assert int(generate.headers["retry-after"]) >= 1
        assert generate.json()["error"]["code"] == "model_not_ready"
        release.set()
        wait_until_ready(client)
        assert client.get("/readyz").json()["status"] == "ready"


def test_readyz_is_503_for_an_empty_store(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "empty"))) as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while (response := client.get("/readyz")).json()["error"]["message"].startswith("models are still"):
            assert time.monotonic() < deadline, "the empty store was never scanned"
            time.sleep(0.05)
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "no models found in 'empty'"
        response = client.post("/generate")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


def test_docs_reference_no_external_host(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", response.text) is None
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', response.text):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/openapi.json").json()["paths"]["/generate"]["post"]


def test_redoc_references_no_external_host(client: TestClient) -> None:
    response = client.get("/redoc")
    assert response.status_code == 200
    assert re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", response.text) is None
