"""The models `make run` serves: every bundled version loads, generates, and the VAE encodes real digits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from genserve import store
from tests.app.helpers import decode_npy, decode_png
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "model_store"
DIGITS = ROOT / "docs" / "inputs"


@pytest.fixture(scope="module")
def bundled() -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(BUNDLED))) as client:
        deadline = time.monotonic() + 120
        while not _all_available(client):
            if time.monotonic() > deadline:
                raise TimeoutError(f"bundled models not loaded: {client.get('/models').json()}")
            time.sleep(0.1)
        yield client


def _all_available(client: TestClient) -> bool:
    models = client.get("/models").json()["models"]
    return bool(models) and all(model["latest_available"] is not None for model in models)


def test_every_bundled_model_is_served_with_its_evaluation(bundled: TestClient) -> None:
    models = {model["name"]: model for model in bundled.get("/models").json()["models"]}

    assert {"mnist-dcgan", "mnist-cdcgan", "mnist-vae"} <= set(models)
    assert set(models) == set(store.list_models(BUNDLED))
    for name, model in models.items():
        latest = next(v for v in model["versions"] if v["version"] == model["latest_available"])
        evaluation = latest["evaluation"]
        assert evaluation is not None, name
        assert evaluation["real_fid"] < evaluation["fid"], name
        response = bundled.post("/generate", params={"model": name, "n": 4, "seed": 1})
        assert response.status_code == 200
        grid = decode_png(response.content)
        assert grid.std() > 10, f"{name} drew blank images"  # real strokes on a dark background


def test_the_bundled_vae_reconstructs_real_test_digits(bundled: TestClient) -> None:
    paths = sorted(DIGITS.glob("*.png"))
    files = [("image", (path.name, path.read_bytes(), "image/png")) for path in paths]
    digits = np.stack([np.asarray(Image.open(path))[..., None] for path in paths]).astype(np.float64)

    response = bundled.post("/reconstruct", params={"model": "mnist-vae", "format": "npy"}, files=files)
    random = bundled.post(
        "/generate", params={"model": "mnist-vae", "n": len(paths), "seed": 3, "format": "npy"}
    )

    assert response.status_code == 200, response.text
    error = np.abs(decode_npy(response.content) - digits).mean()
    assert error < 0.5 * np.abs(decode_npy(random.content) - digits).mean()


def test_the_bundled_dcgan_beats_the_version_it_replaced(bundled: TestClient) -> None:
    # mnist-dcgan v3 (batch 256, the tutorial's discriminator) scored FID 15.6 with classes at 6.8-11.8%.
    model = next(m for m in bundled.get("/models").json()["models"] if m["name"] == "mnist-dcgan")
    latest = next(v for v in model["versions"] if v["version"] == model["latest_available"])
    evaluation = latest["evaluation"]

    assert evaluation["num_samples"] == 10_000
    assert evaluation["fid"] < 15.0
    assert evaluation["inception_score"] > 7.0
    assert 0.06 < min(evaluation["details"]["generated_class_fractions"])
