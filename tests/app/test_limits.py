"""Every request has a bounded cost: body bytes, decoded pixels, concurrent decodes, and what errors echo."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.image import uploads
from app.main import create_app
from tests.app.test_generate import assert_error
from tests.conftest import make_settings, wait_until_ready


def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"{field}.png", data, "image/png")) for field, data in files]


@pytest.fixture(scope="module")
def limited_client(tiny_vae_store: Path) -> Iterator[TestClient]:
    """The VAE service with small budgets, so that tests can reach them cheaply."""
    settings = make_settings(
        tiny_vae_store,
        max_body_bytes=4096,
        max_upload_pixels=250_000,
        max_request_pixels=300_000,
        max_concurrent_decodes=1,
    )
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        yield client


def test_json_body_over_the_limit_is_413_before_it_is_parsed(limited_client: TestClient) -> None:
    body = b'{"latents": [' + b",".join([b"[0.5]"] * 2000) + b"]}"
    response = limited_client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    assert response.json()["error"]["message"].startswith("body:")
    assert "4096" in response.json()["error"]["message"]


def test_body_without_a_length_is_cut_off_at_the_limit(limited_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"latents": ['
        for _ in range(5000):
            yield b"[0.5],"
        yield b"[0.5]]}"

    response = limited_client.post(
        "/generate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


def test_overlong_field_is_not_echoed_back(limited_client: TestClient) -> None:
    response = limited_client.post("/generate", json={"model": "a" * 3000})
    assert_error(response, 422, "invalid_parameter")
    message = response.json()["error"]["message"]
    assert message.startswith("model:") and len(message) < 200


def test_image_over_the_pixel_limit_is_422_naming_the_field_and_limit(limited_client: TestClient) -> None:
    response = limited_client.post("/encode", files=upload(("image", png(600, 600))))
    assert_error(response, 422, "invalid_parameter")
    message = response.json()["error"]["message"]
    assert message.startswith("image:") and "360000" in message and "250000" in message


def test_images_over_the_request_pixel_budget_are_422(limited_client: TestClient) -> None:
    small = png(400, 400)  # 160,000 pixels each: one fits the 300,000 budget, two do not
    assert limited_client.post("/encode", files=upload(("image", small))).status_code == 200
    response = limited_client.post("/encode", files=upload(("image", small), ("image", small)))
    assert_error(response, 422, "invalid_parameter")
    assert "300000" in response.json()["error"]["message"]


def test_decompression_bomb_is_a_pixel_limit_422_not_415(
    limited_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow refuses to open images above twice its own limit; lower it so that a small image trips it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    response = limited_client.post("/encode", files=upload(("image", png(100, 100))))
    assert_error(response, 422, "invalid_parameter")
    assert "pixels" in response.json()["error"]["message"]


def test_decodes_wait_for_each_other_beyond_the_concurrency_limit(
    limited_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    active, most = 0, 0
    lock = threading.Lock()
    real = uploads.prepare_image

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(uploads, "prepare_image", counting)
    results: list[int] = []

    def send() -> None:
        results.append(limited_client.post("/encode", files=upload(("image", png(20, 20)))).status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 4
    assert most == 1


def test_interpolate_body_is_limited_to_what_two_files_need(
    tiny_vae_store: Path,
) -> None:
    settings = make_settings(tiny_vae_store, max_upload_bytes=2048, max_upload_images=16)
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        # 80 kB of text: within what 16 files may send (/encode), beyond what 2 may (POST /interpolate).
        padding = ("note", (None, b"x" * 80_000, "text/plain"))
        files = [*upload(("start", png(8, 8)), ("end", png(8, 8))), padding]
        assert client.post("/encode", files=[*upload(("image", png(8, 8))), padding]).status_code == 200
        response = client.post("/interpolate", files=files)
        assert_error(response, 413, "payload_too_large")


def test_multipart_content_type_is_case_insensitive(vae_client: TestClient) -> None:
    files = upload(("image", png(8, 8)))
    request = vae_client.build_request("POST", "/encode", files=files)
    content_type = request.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    response = vae_client.post("/encode", content=request.read(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text


def test_body_that_is_not_utf8_is_a_422_in_the_error_shape(client: TestClient) -> None:
    response = client.post("/generate", content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_parameter")
    assert response.json()["error"]["message"].startswith("body:")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"version": "²"}, "version"),
        ({"version": "٣"}, "version"),
        ({"version": "9" * 5000}, "version"),
        ({"model": "shapes-dcgan\n"}, "model"),
    ],
)
def test_unusual_numbers_and_names_are_422_naming_the_field(
    client: TestClient, params: dict[str, str], field: str
) -> None:
    response = client.post("/generate", params={"n": 1, **params})
    assert_error(response, 422, "invalid_parameter")
    message = response.json()["error"]["message"]
    assert message.startswith(f"{field}:") and len(message) < 300


def test_unusual_keyframe_seeds_are_422(client: TestClient) -> None:
    response = client.get("/interpolate", params={"seeds": "1,²,3"})
    assert_error(response, 422, "invalid_parameter")
    assert response.json()["error"]["message"].startswith("seeds:")


@pytest.mark.parametrize("body", [{"n": True}, {"seed": False}, {"truncation": True}, {"n": "2"}])
def test_json_booleans_and_strings_are_not_numbers(client: TestClient, body: dict[str, object]) -> None:
    response = client.post("/generate", json=body)
    assert_error(response, 422, "invalid_parameter")
    assert response.json()["error"]["message"].startswith(next(iter(body)))


def test_unusual_label_digits_are_422(conditional_client: TestClient) -> None:
    for label in ("²", "1" * 4000):
        response = conditional_client.post("/generate", params={"n": 1, "label": label})
        assert_error(response, 422, "invalid_parameter")
        assert len(response.json()["error"]["message"]) < 300
