"""Image URLs: one seed's image that browsers and CDNs may keep, its ETag, the redirect to the newest version,
and the cache of rendered files."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.image.seed_files import file_cache
from app.main import create_app
from tests.app.helpers import decode_png
from tests.app.protocol_helpers import combined_store
from tests.app.test_generate import PAD, SIZE, assert_error
from tests.app.test_metrics import scrape, value
from tests.conftest import TINY_CONDITIONAL_MODEL, TINY_MODEL, make_settings, wait_until_ready
from tests.training.text.tiny import TINY_TEXT_MODEL

IMAGES = f"/models/{TINY_MODEL}/versions/1/images"
MODEL = {"model": TINY_MODEL, "version": "1"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def generated(client: TestClient, seed: int, **query: object) -> np.ndarray:
    """The seed's image cut out of `POST /generate?n=1`'s PNG (a grid of one, with its border)."""
    response = client.post("/generate", params={"n": 1, "seed": seed, **query})
    assert response.status_code == 200
    return decode_png(response.content)[PAD : PAD + SIZE, PAD : PAD + SIZE]


def test_an_image_url_answers_the_seeds_image_for_caches_to_keep(client: TestClient) -> None:
    response = client.get(f"{IMAGES}/42.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = response.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert (response.headers["x-model"], response.headers["x-model-version"]) == (TINY_MODEL, "1")
    assert response.headers["x-seeds"] == "42"
    np.testing.assert_array_equal(decode_png(response.content), generated(client, 42))

    webp = client.get(f"{IMAGES}/42.webp", params={"truncation": 0.5})
    assert webp.status_code == 200
    assert webp.headers["content-type"] == "image/webp"
    assert webp.headers["etag"] != etag
    pixels = np.asarray(Image.open(io.BytesIO(webp.content)).convert("RGB"))
    np.testing.assert_array_equal(pixels, generated(client, 42, truncation=0.5))


def test_a_matching_if_none_match_is_304_without_drawing(client: TestClient) -> None:
    etag = client.get(f"{IMAGES}/43.png").headers["etag"]
    before = scrape(client)
    response = client.get(f"{IMAGES}/43.png", headers={"If-None-Match": f'"other", {etag}'})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    after = scrape(client)
    for name in ("genserve_image_cache_hits_total", "genserve_image_cache_misses_total"):
        assert value(after, name, **MODEL) == value(before, name, **MODEL)
    assert client.get(f"{IMAGES}/43.png", headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_repeat_comes_from_the_cache_without_a_model_call(client: TestClient) -> None:
    before = scrape(client)
    first = client.get(f"{IMAGES}/1234.png", params={"truncation": 0.7})
    middle = scrape(client)
    again = client.get(f"{IMAGES}/1234.png", params={"truncation": 0.7})
    after = scrape(client)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content and first.headers["etag"] == again.headers["etag"]

    def moved(name: str, start: Samples, end: Samples) -> float:
        return value(end, name, **MODEL) - value(start, name, **MODEL)

    assert moved("genserve_image_cache_misses_total", before, middle) == 1
    assert moved("genserve_images_generated_total", before, middle) == 1
    assert moved("genserve_image_cache_hits_total", middle, after) == 1
    assert moved("genserve_image_cache_misses_total", middle, after) == 0
    assert moved("genserve_images_generated_total", middle, after) == 0
    assert value(after, "genserve_image_cache_bytes") >= len(first.content)


def test_the_unversioned_url_redirects_to_the_newest_version(client: TestClient) -> None:
    response = client.get(
        f"/models/{TINY_MODEL}/images/42.png", params={"truncation": 0.5}, follow_redirects=False
    )
    assert response.status_code == 307
    assert response.headers["location"] == f"{IMAGES}/42.png?truncation=0.5"
    assert response.headers["cache-control"] == "no-cache"
    followed = client.get(f"/models/{TINY_MODEL}/images/42.png", params={"truncation": 0.5})
    assert followed.status_code == 200
    assert followed.content == client.get(f"{IMAGES}/42.png", params={"truncation": 0.5}).content


@pytest.mark.parametrize(
    ("path", "query", "status", "code", "fragments"),
    [
        (f"{IMAGES}/-1.png", {}, 422, "invalid_parameter", ("seed", "4294967295")),
        (f"{IMAGES}/4294967296.png", {}, 422, "invalid_parameter", ("seed", "4294967295")),
        (f"{IMAGES}/x.png", {}, 422, "invalid_parameter", ("seed", "integer")),
        (f"{IMAGES}/1.bmp", {}, 422, "invalid_parameter", ("format", "png")),
        (f"{IMAGES}/1.png", {"truncation": 0}, 422, "invalid_parameter", ("truncation", "(0, 1]")),
        (f"{IMAGES}/1.png", {"label": "circle"}, 422, "invalid_parameter", ("label", "not conditional")),
        (f"/models/{TINY_MODEL}/versions/latest/images/1.png", {}, 422, "invalid_parameter", ("version",)),
        (f"/models/{TINY_MODEL}/images/1.gif", {}, 422, "invalid_parameter", ("format",)),
        (f"/models/{TINY_MODEL}/versions/7/images/1.png", {}, 404, "version_not_found", ("7",)),
        ("/models/nope/images/1.png", {}, 404, "model_not_found", ("nope",)),
    ],
)
def test_bad_image_urls_are_errors_naming_the_field(
    client: TestClient,
    path: str,
    query: dict[str, object],
    status: int,
    code: str,
    fragments: tuple[str, ...],
) -> None:
    assert_error(client.get(path, params=query, follow_redirects=False), status, code, *fragments)


def test_a_class_by_name_index_or_default_is_one_image(conditional_client: TestClient) -> None:
    base = f"/models/{TINY_CONDITIONAL_MODEL}/versions/1/images/3.png"
    tags = {conditional_client.get(base, params=query).headers["etag"] for query in ({}, {"label": "0"})}
    assert tags == {conditional_client.get(base, params={"label": "circle"}).headers["etag"]}
    assert conditional_client.get(base, params={"label": "square"}).headers["etag"] not in tags
    redirect = conditional_client.get(
        f"/models/{TINY_CONDITIONAL_MODEL}/images/3.png", follow_redirects=False
    )
    assert redirect.headers["location"] == f"{base}?label=circle"


@pytest.fixture(scope="module")
def mixed_client(
    tiny_store: Path, tiny_text_version: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The app over the tiny image model and the tiny text model."""
    store = combined_store(
        tmp_path_factory.mktemp("images-mixed"), tiny_store, tiny_text_version.parent.parent
    )
    with TestClient(create_app(make_settings(store))) as test_client:
        wait_until_ready(test_client)
        yield test_client


def test_a_text_model_has_no_image_urls(mixed_client: TestClient) -> None:
    wait_until_loaded(mixed_client, TINY_TEXT_MODEL)
    for path in (
        f"/models/{TINY_TEXT_MODEL}/versions/1/images/1.png",
        f"/models/{TINY_TEXT_MODEL}/images/1.png",
    ):
        assert_error(
            mixed_client.get(path, follow_redirects=False), 422, "invalid_parameter", "model", "text"
        )


def wait_until_loaded(client: TestClient, name: str) -> None:
    for _ in range(600):
        if client.get(f"/models/{name}").json()["latest_available"] is not None:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not load")


def test_the_file_cache_drops_the_least_recently_used_past_its_budget() -> None:
    cache = file_cache(max_bytes=10)
    keys = [(TINY_MODEL, 1, seed, 1.0, None, "png") for seed in range(4)]
    cache.put(keys[0], b"0000")
    cache.put(keys[1], b"1111")
    assert cache.get(keys[0]) == b"0000"  # now the most recently used
    cache.put(keys[2], b"2222")
    assert (cache.get(keys[0]), cache.get(keys[1]), cache.get(keys[2])) == (b"0000", None, b"2222")
    assert cache.size_bytes == 8
    cache.put(keys[3], b"x" * 11)
    assert cache.get(keys[3]) is None and cache.size_bytes == 8
