"""GET /interpolate: frames, keyframes, methods, animations and HTTP caching."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence

from tests.app.helpers import decode_base64_png, decode_npy, decode_png, frame_count, max_abs_diff
from tests.app.test_generate import assert_error


def frames(client: TestClient, **query: object) -> list[np.ndarray]:
    response = client.get("/interpolate", params={"format": "json", **query})
    assert response.status_code == 200, response.text
    return [decode_base64_png(frame["png_base64"]) for frame in response.json()["frames"]]


def seed_image(client: TestClient, seed: int) -> np.ndarray:
    response = client.post("/generate", params={"n": 1, "seed": seed, "format": "npy"})
    assert response.status_code == 200
    return decode_npy(response.content)[0]


def test_interpolate_frame_count_and_endpoints(client: TestClient) -> None:
    result = frames(client, start=5, end=9, steps=6)
    assert len(result) == 6
    assert max_abs_diff(result[0], seed_image(client, 5)) <= 1
    assert max_abs_diff(result[-1], seed_image(client, 9)) <= 1


def test_interpolate_keyframes_are_hit(client: TestClient) -> None:
    result = frames(client, seeds="3,7,11", steps=5)
    assert len(result) == 5
    for index, seed in ((0, 3), (2, 7), (4, 11)):
        assert max_abs_diff(result[index], seed_image(client, seed)) <= 1


def test_interpolate_slerp_and_lerp_differ_in_between(client: TestClient) -> None:
    slerp = frames(client, start=1, end=2, steps=3, method="slerp")
    lerp = frames(client, start=1, end=2, steps=3, method="lerp")
    assert max_abs_diff(slerp[0], lerp[0]) <= 1
    assert max_abs_diff(slerp[1], lerp[1]) > 1


def test_interpolate_loop_leaves_out_the_closing_frame(client: TestClient) -> None:
    response = client.get(
        "/interpolate", params={"start": 1, "end": 2, "steps": 4, "loop": True, "format": "json"}
    )
    assert response.status_code == 200
    assert [frame["position"] for frame in response.json()["frames"]] == [0.0, 0.5, 1.0, 1.5]


def animation_frames(data: bytes) -> list[np.ndarray]:
    return [
        np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(Image.open(io.BytesIO(data)))
    ]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# WebP frames are lossless; GIF maps each frame onto a palette of 256 colours.
ANIMATION_TOLERANCE = {"webp": 1, "gif": 8}


@pytest.mark.parametrize("image_format", ["gif", "webp"])
def test_interpolate_animations_run_from_start_to_end_one_frame_per_step(
    client: TestClient, image_format: str
) -> None:
    response = client.get("/interpolate", params={"start": 10, "end": 20, "steps": 6, "format": image_format})
    assert response.status_code == 200
    assert response.headers["content-type"] == f"image/{image_format}"
    assert frame_count(response.content) == 6
    frames = animation_frames(response.content)
    start, end = seed_image(client, 10), seed_image(client, 20)
    for frame, keyframe, other in ((frames[0], start, end), (frames[-1], end, start)):
        assert max_abs_diff(frame, keyframe) <= ANIMATION_TOLERANCE[image_format]
        # Closer to its own keyframe than to the other end, whatever the palette did.
        assert mean_abs_diff(frame, keyframe) < mean_abs_diff(frame, other)


def test_interpolate_png_is_a_strip_of_frames(client: TestClient) -> None:
    response = client.get("/interpolate", params={"start": 10, "end": 20, "steps": 4})
    assert response.status_code == 200
    assert decode_png(response.content).shape == (28 + 4, 4 * 30 + 2, 3)


def test_interpolate_etag_answers_304_when_unchanged(client: TestClient) -> None:
    query = {"start": 1, "end": 2, "steps": 4, "format": "gif"}
    first = client.get("/interpolate", params=query)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    pinned = client.get("/interpolate", params={**query, "version": 1})
    assert pinned.headers["cache-control"] == "public, max-age=3600"
    assert pinned.headers["etag"] == etag
    again = client.get("/interpolate", params=query)
    assert again.headers["etag"] == etag and again.content == first.content
    cached = client.get("/interpolate", params=query, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    other = client.get("/interpolate", params={**query, "steps": 5})
    assert other.headers["etag"] != etag
    stale = client.get("/interpolate", params=query, headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"start": 1, "end": 2, "steps": 1}, "steps"),
        ({"start": 1, "end": 2, "steps": 65}, "steps"),
        ({"start": 1}, "start"),
        ({"seeds": "4"}, "seeds"),
        ({"seeds": "4,x"}, "seeds"),
        ({"seeds": "1,2", "start": 1}, "seeds"),
        ({"start": 1, "end": -2}, "end"),
        ({"start": 1, "end": 2, "method": "cubic"}, "method"),
        ({"start": 1, "end": 2, "fps": 0}, "fps"),
        ({"start": 1, "end": 2, "format": "mp4"}, "format"),
        ({"start": 1, "end": 2, "model": "../etc"}, "model"),
    ],
)
def test_interpolate_bad_parameters_return_422(
    client: TestClient, query: dict[str, object], field: str
) -> None:
    assert_error(client.get("/interpolate", params=query), 422, "invalid_parameter", field)


def test_interpolate_unknown_model_returns_404(client: TestClient) -> None:
    assert_error(
        client.get("/interpolate", params={"start": 1, "end": 2, "model": "ghost"}), 404, "model_not_found"
    )
