"""TensorFlow Serving's REST API, with plain httpx, against the request and response shapes it documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.helpers import decode_npy, max_abs_diff
from tests.app.protocol_helpers import combined_store, seeded_latents, wait_for_every_model
from tests.conftest import (
    TINY_CONDITIONAL_MODEL,
    TINY_LATENT_DIM,
    TINY_MODEL,
    make_settings,
    wait_until_ready,
)

MAX_N = 8


@pytest.fixture(scope="module")
def client(
    tiny_store: Path, tiny_conditional_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The real app (an httpx client underneath) over both tiny models, each labelled `stable` at version 1."""
    model_store = combined_store(
        tmp_path_factory.mktemp("tfserving") / "store", tiny_store, tiny_conditional_store
    )
    settings = make_settings(model_store, default_model=TINY_MODEL, max_n=MAX_N)
    with TestClient(create_app(settings)) as test_client:
        wait_until_ready(test_client)
        wait_for_every_model(str(test_client.base_url), get=test_client.get)
        yield test_client


def generated(client: TestClient, model: str, seed: int, n: int) -> np.ndarray:
    response = client.post("/generate", params={"model": model, "seed": seed, "n": n, "format": "npy"})
    assert response.status_code == 200
    return decode_npy(response.content)


def predicted(response: Any, key: str) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert list(response.json()) == [key]
    return np.asarray(response.json()[key], dtype=np.uint8)


def test_status_lists_every_version_or_the_one_asked_for(client: TestClient) -> None:
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }

    for path in ("", "/versions/1", "/labels/stable"):
        response = client.get(f"/v1/models/{TINY_MODEL}{path}")
        assert response.status_code == 200
        assert response.json() == expected


def test_metadata_is_the_signature_def_map(client: TestClient) -> None:
    response = client.get(f"/v1/models/{TINY_CONDITIONAL_MODEL}/labels/stable/metadata")

    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": TINY_CONDITIONAL_MODEL, "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["z"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": str(TINY_LATENT_DIM), "name": ""}],
            "unknown_rank": False,
        },
    }
    assert signature["inputs"]["label"]["dtype"] == "DT_INT32"
    images = signature["outputs"]["images"]
    assert images["dtype"] == "DT_UINT8" and len(images["tensor_shape"]["dim"]) == 4


def test_row_format_gives_the_pixels_of_generate(client: TestClient) -> None:
    expected = generated(client, TINY_MODEL, seed=20, n=3)

    # One input: each instance is that input's value, and the one output comes back unnamed.
    response = client.post(
        f"/v1/models/{TINY_MODEL}:predict", json={"instances": seeded_latents([20, 21, 22]).tolist()}
    )

    assert max_abs_diff(predicted(response, "predictions"), expected) <= 1


def test_columnar_format_with_named_inputs(client: TestClient) -> None:
    expected = generated(client, TINY_CONDITIONAL_MODEL, seed=9, n=3)  # classes 0, 1, 2
    body = {
        "signature_name": "serving_default",
        "inputs": {"z": seeded_latents([9, 10, 11]).tolist(), "label": [0, 1, 2]},
    }

    response = client.post(f"/v1/models/{TINY_CONDITIONAL_MODEL}/versions/1:predict", json=body)

    assert max_abs_diff(predicted(response, "outputs"), expected) <= 1


def test_row_format_with_named_inputs_per_instance(client: TestClient) -> None:
    expected = generated(client, TINY_CONDITIONAL_MODEL, seed=9, n=3)
    latents = seeded_latents([9, 10, 11])
    instances = [{"z": latents[i].tolist(), "label": i} for i in range(3)]

    response = client.post(
        f"/v1/models/{TINY_CONDITIONAL_MODEL}/labels/stable:predict", json={"instances": instances}
    )

    assert max_abs_diff(predicted(response, "predictions"), expected) <= 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/models/no-such-model", None, 404),
        ("GET", f"/v1/models/{TINY_MODEL}/versions/7", None, 404),
        ("GET", f"/v1/models/{TINY_MODEL}/labels/canary/metadata", None, 404),
        ("POST", "/v1/models/no-such-model:predict", {"instances": [[0.0] * TINY_LATENT_DIM]}, 404),
        ("POST", f"/v1/models/{TINY_MODEL}:predict", {"instances": [[0.0] * 3]}, 400),
        (
            "POST",
            f"/v1/models/{TINY_MODEL}:predict",
            {"instances": [[0.0] * TINY_LATENT_DIM] * (MAX_N + 1)},
            400,
        ),
        ("POST", f"/v1/models/{TINY_MODEL}:predict", {"instances": [], "inputs": []}, 400),
        ("POST", f"/v1/models/{TINY_MODEL}:predict", {"instances": [[0.0], [0.0, 1.0]]}, 400),
        ("POST", f"/v1/models/{TINY_MODEL}:predict", {"signature_name": "encode", "instances": [[0.0]]}, 400),
        (
            "POST",
            f"/v1/models/{TINY_CONDITIONAL_MODEL}:predict",
            {"instances": [[0.0] * TINY_LATENT_DIM]},
            400,
        ),
        (
            "POST",
            f"/v1/models/{TINY_CONDITIONAL_MODEL}:predict",
            {"inputs": {"z": [[0.0] * TINY_LATENT_DIM], "label": [0.5]}},
            400,
        ),
        ("POST", f"/v1/models/{TINY_MODEL}:predict", {"inputs": {"z": [["a"] * TINY_LATENT_DIM]}}, 400),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-label",
        "predict-unknown-model",
        "wrong-latent-length",
        "more-rows-than-max-n",
        "both-formats",
        "ragged-rows",
        "other-signature",
        "unnamed-inputs-for-two",
        "fractional-label",
        "not-numbers",
    ],
)
def test_errors_are_a_plain_error_string(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None, status: int
) -> None:
    response = client.request(method, path, json=body)

    assert response.status_code == status
    assert list(response.json()) == ["error"]
    assert isinstance(response.json()["error"], str)


def test_the_rest_of_the_service_keeps_its_error_shape(client: TestClient) -> None:
    response = client.get("/models/no-such-model")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
