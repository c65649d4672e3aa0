"""CORS: browsers on the origins `GENSERVE_CORS_ORIGINS` names may call the API; by default nothing CORS is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import make_settings

ALLOWED = "https://gallery.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}


@pytest.fixture(scope="module")
def cors_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app, over an empty store, allowing one origin."""
    store = tmp_path_factory.mktemp("cors-store")
    with TestClient(create_app(make_settings(store, cors_origins=[ALLOWED]))) as client:
        yield client


def test_a_preflight_from_an_allowed_origin_is_answered(cors_client: TestClient) -> None:
    response = cors_client.options("/generate", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()


def test_a_preflight_from_another_origin_is_refused(cors_client: TestClient) -> None:
    response = cors_client.options("/generate", headers={"Origin": "https://elsewhere.example", **PREFLIGHT})
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_answers_to_an_allowed_origin_expose_the_services_headers(cors_client: TestClient) -> None:
    response = cors_client.get("/healthz", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "etag" in response.headers["access-control-expose-headers"].lower()
    other = cors_client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_nothing_cors_is_sent_by_default(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        preflight = client.options("/generate", headers={"Origin": ALLOWED, **PREFLIGHT})
        plain = client.get("/healthz", headers={"Origin": ALLOWED})
    assert plain.status_code == 200
    for response in (preflight, plain):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_origins_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENSERVE_CORS_ORIGINS", f"{ALLOWED}, https://b.example,")
    assert Settings(model_store=tmp_path).cors_origins == [ALLOWED, "https://b.example"]
    assert Settings(model_store=tmp_path, cors_origins=[]).cors_origins == []


def test_a_preflight_needs_no_api_key_but_the_request_still_does(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("gallery: 3f9c1e0b7a2d4c68a1b5e9f0d2c7a4b1\n")
    settings = make_settings(tmp_path, cors_origins=[ALLOWED], api_keys_file=keys)
    with TestClient(create_app(settings)) as client:
        preflight = client.options("/generate", headers={"Origin": ALLOWED, **PREFLIGHT})
        refused = client.post("/generate", headers={"Origin": ALLOWED})
    assert preflight.status_code == 200
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED
