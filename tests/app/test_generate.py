"""POST /generate through the real app and a tiny trained model."""

from __future__ import annotations

import io
import logging
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.app.helpers import decode_base64_png, decode_npy, decode_png, max_abs_diff
from tests.conftest import TINY_LATENT_DIM, TINY_MODEL

SIZE = 28
PAD = 2


def generate_npy(client: TestClient, **query: object) -> np.ndarray:
    response = client.post("/generate", params={"format": "npy", **query})
    assert response.status_code == 200, response.text
    return decode_npy(response.content)


def test_generate_png_grid_has_one_tile_per_image(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 16, "seed": 42})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    grid = decode_png(response.content)
    assert grid.shape == (4 * (SIZE + PAD) + PAD, 4 * (SIZE + PAD) + PAD, 3)
    images = generate_npy(client, n=16, seed=42)
    for index in range(16):
        top, left = PAD + (index // 4) * (SIZE + PAD), PAD + (index % 4) * (SIZE + PAD)
        assert max_abs_diff(grid[top : top + SIZE, left : left + SIZE], images[index]) == 0


def test_generate_grid_columns_follow_cols(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 5, "seed": 1, "cols": 5})
    assert response.status_code == 200
    assert decode_png(response.content).shape == (SIZE + 2 * PAD, 5 * (SIZE + PAD) + PAD, 3)


def test_generate_sets_model_and_seed_headers(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 16, "seed": 42})
    assert response.status_code == 200
    assert response.headers["x-model"] == TINY_MODEL
    assert response.headers["x-model-version"] == "1"
    assert response.headers["x-seeds"] == "42-57"


def test_generate_without_seed_picks_a_random_range(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 2, "format": "npy"})
    assert response.status_code == 200
    first, last = (int(part) for part in response.headers["x-seeds"].split("-"))
    assert last == first + 1
    np.testing.assert_array_equal(decode_npy(response.content), generate_npy(client, n=2, seed=first))


def test_generate_formats_decode_to_n_images(client: TestClient) -> None:
    images = generate_npy(client, n=5, seed=7)
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert images.std() > 0

    response = client.post("/generate", params={"n": 5, "seed": 7, "format": "json"})
    assert response.status_code == 200
    body = response.json()
    assert [item["seed"] for item in body["images"]] == [7, 8, 9, 10, 11]
    assert (body["width"], body["height"], body["channels"]) == (SIZE, SIZE, 3)
    for item, expected in zip(body["images"], images, strict=True):
        assert "latent" not in item
        assert max_abs_diff(decode_base64_png(item["png_base64"]), expected) == 0

    response = client.post("/generate", params={"n": 5, "seed": 7, "format": "zip"})
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = [name for name in archive.namelist() if name != "manifest.json"]
        assert len(names) == 5
        assert max_abs_diff(decode_png(archive.read(names[4])), images[4]) == 0


def test_same_seed_gives_same_pixels_across_calls_and_batch_sizes(client: TestClient) -> None:
    alone = generate_npy(client, n=1, seed=50)
    again = generate_npy(client, n=1, seed=50)
    within = generate_npy(client, n=16, seed=42)
    np.testing.assert_array_equal(alone, again)
    assert max_abs_diff(alone[0], within[8]) <= 1


def test_explicit_latents_reproduce_seeded_images(client: TestClient) -> None:
    response = client.post(
        "/generate", params={"n": 3, "seed": 100, "format": "json", "include_latents": True}
    )
    assert response.status_code == 200
    latents = [item["latent"] for item in response.json()["images"]]
    assert len(latents[0]) == TINY_LATENT_DIM
    expected = np.random.RandomState(100).randn(TINY_LATENT_DIM).astype(np.float32)
    np.testing.assert_allclose(latents[0], expected, rtol=1e-6)

    replay = client.post("/generate", json={"latents": latents, "format": "npy"})
    assert replay.status_code == 200
    assert "x-seeds" not in replay.headers
    assert max_abs_diff(decode_npy(replay.content), generate_npy(client, n=3, seed=100)) <= 1


def test_truncation_pulls_images_toward_the_mean_image(client: TestClient) -> None:
    mean_image = decode_npy(
        client.post(
            "/generate", json={"latents": [[0.0] * TINY_LATENT_DIM]}, params={"format": "npy"}
        ).content
    )[0].astype(float)
    free = generate_npy(client, n=8, seed=3).astype(float)
    truncated = generate_npy(client, n=8, seed=3, truncation=0.01).astype(float)
    distance_free = np.abs(free - mean_image).mean()
    distance_truncated = np.abs(truncated - mean_image).mean()
    assert distance_truncated < 0.2 * distance_free
    assert distance_truncated < 2.0


def test_body_fields_override_query_fields(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 4, "seed": 1}, json={"n": 2, "seed": 9, "format": "npy"})
    assert response.status_code == 200
    assert response.headers["x-seeds"] == "9-10"
    assert decode_npy(response.content).shape[0] == 2


def assert_error(response: Response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for fragment in fragments:
        assert fragment in error["message"], error["message"]


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        ({"n": 0}, ("n", "between 1 and 64")),
        ({"n": 65}, ("n", "between 1 and 64")),
        ({"n": "many"}, ("n", "integer")),
        ({"seed": -1}, ("seed", "4294967295")),
        ({"seed": 2**32}, ("seed", "4294967295")),
        ({"seed": 2**32 - 2, "n": 4}, ("seed", "seed + n - 1")),
        ({"seed": "x"}, ("seed", "integer")),
        ({"model": "../x"}, ("model", "[a-z0-9]")),
        ({"model": "Upper"}, ("model",)),
        ({"version": "a/b"}, ("version", "positive integer")),
        ({"version": "0"}, ("version", "positive integer")),
        ({"truncation": 0}, ("truncation", "(0, 1]")),
        ({"truncation": 1.5}, ("truncation", "(0, 1]")),
        ({"format": "bmp"}, ("format", "png")),
        ({"cols": 0}, ("cols", "between 1")),
        ({"label": "circle"}, ("label", "not conditional")),
    ],
)
def test_generate_bad_parameters_return_422_naming_the_field(
    client: TestClient, query: dict[str, object], fragments: tuple[str, ...]
) -> None:
    assert_error(client.post("/generate", params=query), 422, "invalid_parameter", *fragments)


def test_generate_unknown_model_returns_404(client: TestClient) -> None:
    assert_error(
        client.post("/generate", params={"model": "nope"}), 404, "model_not_found", "nope", TINY_MODEL
    )


def test_generate_unknown_version_returns_404(client: TestClient) -> None:
    assert_error(client.post("/generate", params={"version": 7}), 404, "version_not_found", "7")


def test_generate_latest_version_alias_is_accepted(client: TestClient) -> None:
    response = client.post("/generate", params={"version": "latest", "n": 1, "seed": 0})
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "1"


def test_generate_wrong_latent_length_returns_422(client: TestClient) -> None:
    response = client.post("/generate", json={"latents": [[0.0] * (TINY_LATENT_DIM - 1)]})
    assert_error(response, 422, "invalid_parameter", "latents", str(TINY_LATENT_DIM))


def test_generate_nan_latent_returns_422(client: TestClient) -> None:
    body = '{"latents": [[NaN' + ", 0" * (TINY_LATENT_DIM - 1) + "]]}"
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_parameter", "latents", "finite")


def test_generate_too_many_latents_returns_422(client: TestClient) -> None:
    response = client.post("/generate", json={"latents": [[0.0] * TINY_LATENT_DIM] * 65})
    assert_error(response, 422, "invalid_parameter", "latents", "64")


def test_generate_latents_with_seed_returns_422(client: TestClient) -> None:
    response = client.post("/generate", json={"latents": [[0.0] * TINY_LATENT_DIM], "seed": 3})
    assert_error(response, 422, "invalid_parameter", "seed")


def test_generate_unknown_body_field_returns_422(client: TestClient) -> None:
    assert_error(client.post("/generate", json={"count": 3}), 422, "invalid_parameter", "count")


def test_generate_malformed_json_returns_422(client: TestClient) -> None:
    response = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_parameter")


def test_unexpected_error_is_logged_once_and_hidden(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from app.image.rendering import GeneratedView

    def explode(*_: object) -> bytes:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(GeneratedView, "body", explode)
    with caplog.at_level(logging.ERROR):
        response = client.post("/generate", params={"n": 1, "seed": 0})
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text
    assert [record for record in caplog.records if "secret internals" in str(record.exc_info)] != []
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_unknown_route_uses_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nowhere"), 404, "not_found")
