"""Conditional models through the real app: labels chosen, validated and cycled."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.image.servable import image_servable
from tests.app.helpers import decode_base64_png, decode_npy
from tests.app.test_generate import assert_error
from tests.conftest import TINY_CONDITIONAL_MODEL


def generate_npy(client: TestClient, **query: object) -> np.ndarray:
    response = client.post("/generate", params={"format": "npy", **query})
    assert response.status_code == 200, response.text
    return decode_npy(response.content)


def test_generate_with_a_class_name_returns_images(conditional_client: TestClient) -> None:
    response = conditional_client.post("/generate", params={"n": 4, "seed": 1, "label": "square"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model"] == TINY_CONDITIONAL_MODEL


def test_label_is_honoured_and_deterministic(conditional_client: TestClient) -> None:
    circle = generate_npy(conditional_client, n=2, seed=5, label="circle")
    square = generate_npy(conditional_client, n=2, seed=5, label="square")
    square_again = generate_npy(conditional_client, n=2, seed=5, label="square")
    square_by_index = generate_npy(conditional_client, n=2, seed=5, label=1)

    assert not np.array_equal(circle, square)
    np.testing.assert_array_equal(square, square_again)
    np.testing.assert_array_equal(square, square_by_index)


def test_without_a_label_image_i_gets_class_i_modulo_the_class_count(conditional_client: TestClient) -> None:
    cycled = generate_npy(conditional_client, n=5, seed=20)

    for index in range(5):
        alone = generate_npy(conditional_client, n=1, seed=20 + index, label=index % 3)
        assert np.abs(cycled[index].astype(int) - alone[0].astype(int)).max() <= 1


@pytest.mark.parametrize("label", ["9", "hexagon", "-1"])
def test_unknown_labels_return_422_naming_the_field(conditional_client: TestClient, label: str) -> None:
    response = conditional_client.post("/generate", params={"n": 1, "label": label})
    assert_error(response, 422, "invalid_parameter", "label", "circle")


def test_interpolate_keeps_the_label_fixed(conditional_client: TestClient) -> None:
    response = conditional_client.get(
        "/interpolate", params={"start": 3, "end": 4, "steps": 3, "label": "triangle", "format": "json"}
    )
    assert response.status_code == 200, response.text
    frames = [decode_base64_png(frame["png_base64"]) for frame in response.json()["frames"]]
    first = generate_npy(conditional_client, n=1, seed=3, label="triangle")[0]
    last = generate_npy(conditional_client, n=1, seed=4, label="triangle")[0]

    assert np.abs(frames[0].astype(int) - first.astype(int)).max() <= 1
    assert np.abs(frames[-1].astype(int) - last.astype(int)).max() <= 1


def test_interpolate_without_a_label_returns_422(conditional_client: TestClient) -> None:
    response = conditional_client.get("/interpolate", params={"start": 3, "end": 4})
    assert_error(response, 422, "invalid_parameter", "label")


def blend_frames(client: TestClient, **query: object) -> list[np.ndarray]:
    params = {"start": 3, "end": 4, "steps": 5, "format": "json", **query}
    response = client.get("/interpolate", params=params)
    assert response.status_code == 200, response.text
    return [decode_base64_png(frame["png_base64"]) for frame in response.json()["frames"]]


def test_interpolate_blends_from_start_label_to_end_label(conditional_client: TestClient) -> None:
    blended = blend_frames(conditional_client, start_label="circle", end_label="triangle")
    circle = blend_frames(conditional_client, label="circle")
    triangle = blend_frames(conditional_client, label="triangle")

    assert np.abs(blended[0].astype(int) - circle[0].astype(int)).max() <= 1
    assert np.abs(blended[-1].astype(int) - triangle[-1].astype(int)).max() <= 1
    assert not np.array_equal(blended[2], circle[2]) and not np.array_equal(blended[2], triangle[2])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"start_label": "circle"}, "end_label"),
        ({"end_label": "circle"}, "start_label"),
        ({"start_label": "circle", "end_label": "square", "label": "circle"}, "label"),
        ({"start_label": "hexagon", "end_label": "square"}, "start_label"),
    ],
)
def test_interpolate_bad_label_blends_return_422_naming_the_field(
    conditional_client: TestClient, query: dict[str, object], field: str
) -> None:
    response = conditional_client.get("/interpolate", params={"start": 1, "end": 2, **query})
    assert_error(response, 422, "invalid_parameter", field)
    assert response.json()["error"]["message"].startswith(field)


def test_interpolate_label_blend_needs_the_embedding_signatures(
    conditional_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = image_servable(conditional_client.app.state.registry.resolve(None, None)).runtime  # type: ignore[attr-defined]
    monkeypatch.setattr(runtime, "label_embeddings", None)

    response = conditional_client.get(
        "/interpolate", params={"start": 1, "end": 2, "start_label": "circle", "end_label": "square"}
    )

    assert_error(response, 422, "invalid_parameter", "start_label", "cannot blend classes")


def test_unconditional_models_refuse_label_blends(client: TestClient) -> None:
    response = client.get(
        "/interpolate", params={"start": 1, "end": 2, "start_label": "circle", "end_label": "square"}
    )
    assert_error(response, 422, "invalid_parameter", "start_label", "not conditional")
