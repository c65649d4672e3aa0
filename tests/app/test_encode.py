"""Images in, through the real app and a tiny trained VAE: /encode, /reconstruct, POST /interpolate."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from genserve.conventions import to_uint8
from tests.app.helpers import decode_base64_png, decode_npy, decode_png, frame_count, running_app
from tests.app.test_generate import assert_error
from tests.app.test_metrics import scrape, value
from tests.conftest import TINY_LATENT_DIM, TINY_MODEL, TINY_VAE, make_settings, wait_until_ready
from training.datasets import load_dataset

Files = list[tuple[str, tuple[str, bytes, str]]]


def shape_images(count: int, seed: int = 11) -> np.ndarray:
    """uint8 [count, 28, 28, 3] procedural shapes, like the tiny VAE's training data."""
    return to_uint8(load_dataset("shapes", limit=count, seed=seed).images)


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def image_files(images: np.ndarray, field: str = "image") -> Files:
    return [
        (field, (f"shape{index}.png", png_bytes(image), "image/png")) for index, image in enumerate(images)
    ]


def encode(client: TestClient, images: np.ndarray, **query: object) -> np.ndarray:
    response = client.post("/encode", params=query, files=image_files(images))
    assert response.status_code == 200, response.text
    return np.array([item["latent"] for item in response.json()["images"]], dtype=np.float32)


def reconstruct_npy(client: TestClient, images: np.ndarray) -> np.ndarray:
    response = client.post("/reconstruct", params={"format": "npy"}, files=image_files(images))
    assert response.status_code == 200, response.text
    return decode_npy(response.content)


def mean_error(made: np.ndarray, wanted: np.ndarray) -> float:
    return float(np.abs(made.astype(np.float64) - wanted.astype(np.float64)).mean())


def test_encode_returns_one_latent_and_log_variance_per_upload(vae_client: TestClient) -> None:
    images = shape_images(3)
    response = vae_client.post("/encode", files=image_files(images))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["latent_dim"]) == (TINY_VAE, 1, TINY_LATENT_DIM)
    assert response.headers["x-model"] == TINY_VAE
    assert [item["filename"] for item in body["images"]] == ["shape0.png", "shape1.png", "shape2.png"]
    for item in body["images"]:
        assert len(item["latent"]) == len(item["log_var"]) == TINY_LATENT_DIM
    latents = np.array([item["latent"] for item in body["images"]])
    assert not np.allclose(latents[0], latents[1])


def test_encoding_is_deterministic_and_independent_of_the_batch(vae_client: TestClient) -> None:
    images = shape_images(3)
    together = encode(vae_client, images)
    alone = np.concatenate([encode(vae_client, image[None]) for image in images])

    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(encode(vae_client, images), together, atol=1e-6)


def test_reconstruction_is_closer_to_the_input_than_a_random_image(vae_client: TestClient) -> None:
    images = shape_images(8)
    reconstructed = reconstruct_npy(vae_client, images)
    random = vae_client.post("/generate", params={"n": 8, "seed": 99, "format": "npy"})

    assert reconstructed.shape == images.shape and reconstructed.dtype == np.uint8
    assert mean_error(reconstructed, images) < 0.75 * mean_error(decode_npy(random.content), images)


def test_decoding_an_encoded_latent_through_generate_gives_the_reconstruction(vae_client: TestClient) -> None:
    images = shape_images(2)
    latents = encode(vae_client, images)
    decoded = vae_client.post("/generate", json={"latents": latents.tolist(), "format": "npy"})

    assert decoded.status_code == 200, decoded.text
    assert np.abs(decode_npy(decoded.content).astype(int) - reconstruct_npy(vae_client, images)).max() <= 1


def test_reconstruct_compare_shows_the_inputs_above_their_reconstructions(vae_client: TestClient) -> None:
    images = shape_images(3)
    response = vae_client.post("/reconstruct", params={"compare": "true"}, files=image_files(images))

    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    grid = decode_png(response.content)
    reconstructed = reconstruct_npy(vae_client, images)
    assert grid.shape == (2 + 2 * 30, 2 + 3 * 30, 3)  # 2 rows of 3 tiles of 28 px with 2 px padding
    np.testing.assert_array_equal(grid[2:30, 2:30], images[0])
    np.testing.assert_array_equal(grid[32:60, 62:90], reconstructed[2])


def test_reconstruct_json_carries_pngs_and_latents(vae_client: TestClient) -> None:
    images = shape_images(2)
    response = vae_client.post("/reconstruct", params={"format": "json"}, files=image_files(images))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["channels"]) == (28, 28, 3)
    pixels = np.stack([decode_base64_png(item["png_base64"]) for item in body["images"]])
    np.testing.assert_array_equal(pixels, reconstruct_npy(vae_client, images))
    np.testing.assert_allclose(
        [item["latent"] for item in body["images"]], encode(vae_client, images), atol=1e-5
    )


def test_interpolating_two_uploads_runs_from_one_reconstruction_to_the_other(vae_client: TestClient) -> None:
    images = shape_images(2, seed=5)
    files = image_files(images[:1], "start") + image_files(images[1:], "end")
    response = vae_client.post("/interpolate", params={"steps": 5, "format": "json"}, files=files)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seeds"] is None and body["method"] == "lerp"
    frames = np.stack([decode_base64_png(frame["png_base64"]) for frame in body["frames"]])
    assert [frame["position"] for frame in body["frames"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    ends = reconstruct_npy(vae_client, images)
    assert np.abs(frames[0].astype(int) - ends[0]).max() <= 1
    assert np.abs(frames[-1].astype(int) - ends[1]).max() <= 1
    assert 0 < mean_error(frames[2], ends[0]) and 0 < mean_error(frames[2], ends[1])


def test_interpolating_uploads_as_an_animation(vae_client: TestClient) -> None:
    images = shape_images(2)
    files = image_files(images[:1], "start") + image_files(images[1:], "end")
    response = vae_client.post(
        "/interpolate", params={"steps": 6, "format": "gif", "loop": "true"}, files=files
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/gif"
    assert frame_count(response.content) == 6


def test_uploads_are_fitted_to_the_model_input(vae_client: TestClient) -> None:
    small, other = shape_images(2)
    large = np.asarray(Image.fromarray(small).resize((112, 112), Image.Resampling.NEAREST))
    grey_rgba = png_bytes(large, "RGBA")

    latent_small, latent_other = encode(vae_client, np.stack([small, other]))
    response = vae_client.post("/encode", files=[("image", ("big.png", grey_rgba, "image/png"))])

    assert response.status_code == 200, response.text
    latent_large = np.array(response.json()["images"][0]["latent"])
    # Resized back down to 28 px the large copy is nearly the same picture: its latent is far closer to the
    # small copy's than another shape's is (distances in the latent space the model serves, flow prior included).
    assert np.linalg.norm(latent_large - latent_small) < 0.25 * np.linalg.norm(latent_other - latent_small)


def test_invert_flips_the_pixels_before_encoding(vae_client: TestClient) -> None:
    image = shape_images(1)[0]
    inverted_upload = 255 - image

    direct = encode(vae_client, image[None])
    flipped_back = encode(vae_client, inverted_upload[None], invert="true")

    np.testing.assert_allclose(flipped_back, direct, atol=1e-5)


def test_models_lists_the_encode_capability(vae_client: TestClient) -> None:
    version = vae_client.get("/models").json()["models"][0]["versions"][0]
    assert version["kind"] == "vae"
    assert version["capabilities"] == ["generate", "interpolate", "encode"]


@pytest.mark.parametrize(
    ("files", "status", "code", "fragments"),
    [
        ([], 422, "invalid_parameter", ("image", "between 1 and 16")),
        ([("other", ("a.png", b"x", "image/png"))], 422, "invalid_parameter", ("image", "got 0")),
        (
            [("image", ("a.txt", b"hello world", "text/plain"))],
            415,
            "unsupported_media_type",
            ("image", "PNG"),
        ),
        ([("image", ("a.png", b"", "image/png"))], 422, "invalid_parameter", ("image", "empty")),
    ],
)
def test_bad_uploads_are_4xx_naming_the_field(
    vae_client: TestClient, files: Files, status: int, code: str, fragments: tuple[str, ...]
) -> None:
    response = vae_client.post("/encode", files=files or {"unused": ("", b"", "text/plain")})
    assert_error(response, status, code, *fragments)


def test_a_truncated_image_is_415(vae_client: TestClient) -> None:
    noisy = np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)
    data = png_bytes(noisy)
    response = vae_client.post("/encode", files=[("image", ("cut.png", data[: len(data) // 2], "image/png"))])
    assert_error(response, 415, "unsupported_media_type", "image", "truncated")


def test_a_text_field_instead_of_a_file_is_422(vae_client: TestClient) -> None:
    response = vae_client.post("/encode", data={"image": "not a file"}, files={"x": ("x", b"", "text/plain")})
    assert_error(response, 422, "invalid_parameter", "image", "file part")


def test_a_body_that_is_not_multipart_is_415(vae_client: TestClient) -> None:
    response = vae_client.post(
        "/encode", content=png_bytes(shape_images(1)[0]), headers={"content-type": "image/png"}
    )
    assert_error(response, 415, "unsupported_media_type", "content-type", "multipart/form-data")


def test_too_many_uploads_is_422(vae_client: TestClient) -> None:
    response = vae_client.post("/encode", files=image_files(shape_images(17)))
    assert_error(response, 422, "invalid_parameter", "image", "between 1 and 16", "got 17")


def test_interpolate_needs_both_uploads(vae_client: TestClient) -> None:
    response = vae_client.post("/interpolate", files=image_files(shape_images(1), "start"))
    assert_error(response, 422, "invalid_parameter", "end", "exactly 1")


def test_interpolate_steps_are_checked_before_the_upload_is_read(vae_client: TestClient) -> None:
    images = shape_images(2)
    files = image_files(images[:1], "start") + image_files(images[1:], "end")
    response = vae_client.post("/interpolate", params={"steps": 1000}, files=files)
    assert_error(response, 422, "invalid_parameter", "steps", "between 2 and 64")


@pytest.fixture(scope="module")
def strict_client(tiny_vae_store: Path) -> Iterator[TestClient]:
    """The VAE app with small upload limits."""
    settings = make_settings(tiny_vae_store, max_upload_bytes=4096, max_upload_side=64, max_upload_images=2)
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        yield client


def test_a_file_over_the_byte_limit_is_413(strict_client: TestClient) -> None:
    noisy = np.random.RandomState(1).randint(0, 256, (60, 60, 3), dtype=np.uint8)
    data = png_bytes(noisy)
    assert len(data) > 4096
    response = strict_client.post("/encode", files=[("image", ("big.png", data, "image/png"))])
    assert_error(response, 413, "payload_too_large", "image", "4096 bytes")


def test_a_body_over_the_request_limit_is_413_before_parsing(strict_client: TestClient) -> None:
    response = strict_client.post("/encode", files=[("image", ("huge.png", b"\0" * 200_000, "image/png"))])
    assert_error(response, 413, "payload_too_large", "body")


def test_an_image_over_the_side_limit_is_422(strict_client: TestClient) -> None:
    wide = np.zeros((10, 100, 3), dtype=np.uint8)
    response = strict_client.post("/encode", files=[("image", ("wide.png", png_bytes(wide), "image/png"))])
    assert_error(response, 422, "invalid_parameter", "image", "100x10", "between 2 and 64")


def test_upload_count_follows_the_setting(strict_client: TestClient) -> None:
    response = strict_client.post("/encode", files=image_files(shape_images(3)))
    assert_error(response, 422, "invalid_parameter", "image", "between 1 and 2")


def wait_until_available(client: TestClient, name: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get(f"/models/{name}").json().get("latest_available") is not None:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name} not loaded after {timeout_s} s")


@pytest.fixture(scope="module")
def mixed_store(tiny_store: Path, tiny_vae_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the tiny DCGAN (first by name) and the tiny VAE."""
    root = tmp_path_factory.mktemp("mixed") / "model_store"
    shutil.copytree(tiny_store / TINY_MODEL, root / TINY_MODEL)
    shutil.copytree(tiny_vae_store / TINY_VAE, root / TINY_VAE)
    return root


def test_without_a_model_uploads_go_to_the_vae_and_a_gan_is_refused(mixed_store: Path) -> None:
    with TestClient(create_app(make_settings(mixed_store))) as client:
        wait_until_ready(client)
        wait_until_available(client, TINY_VAE)
        files = image_files(shape_images(1))

        default = client.post("/encode", files=files)
        refused = client.post("/encode", params={"model": TINY_MODEL}, files=files)

    assert client.app.state.registry.default_model == TINY_MODEL  # type: ignore[attr-defined]
    assert default.status_code == 200 and default.json()["model"] == TINY_VAE
    assert_error(refused, 422, "invalid_parameter", "model", "dcgan", "cannot encode", TINY_VAE)


def test_concurrent_uploads_share_encoder_calls(tiny_vae_store: Path) -> None:
    images = shape_images(8)

    async def scenario() -> None:
        async with running_app(tiny_vae_store, max_batch_size=32, max_delay_ms=100) as client:
            responses = await asyncio.gather(
                *(client.post("/encode", files=image_files(image[None])) for image in images)
            )
            stats = (await client.get("/models")).json()["models"][0]["versions"][0]["batching"]
            assert all(response.status_code == 200 for response in responses)
            latents = np.array([response.json()["images"][0]["latent"] for response in responses])
            assert stats["images"] == 8 and stats["model_calls"] < 8
            together = (await client.post("/encode", files=image_files(images))).json()["images"]
            np.testing.assert_allclose(latents, [item["latent"] for item in together], atol=1e-4)

    asyncio.run(scenario())


def test_openapi_describes_the_uploads_as_files(vae_client: TestClient) -> None:
    paths = vae_client.get("/openapi.json").json()["paths"]

    for path, fields in (
        ("/encode", ["image"]),
        ("/reconstruct", ["image"]),
        ("/interpolate", ["start", "end"]),
    ):
        body = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["required"] == fields
        for field in fields:
            schema = body["properties"][field]
            assert "binary" in (schema.get("format"), schema.get("items", {}).get("format"))
    assert "get" in paths["/interpolate"]  # the seed interpolation stays beside the upload one


def test_encoded_uploads_are_counted_apart_from_generated_images(vae_client: TestClient) -> None:
    labels = {"model": TINY_VAE, "version": "1"}
    before = scrape(vae_client)
    assert vae_client.post("/encode", files=image_files(shape_images(3))).status_code == 200
    after = scrape(vae_client)

    def moved(name: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("genserve_images_encoded_total") == 3
    assert moved("genserve_images_generated_total") == 0
