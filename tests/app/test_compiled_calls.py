"""The model call chosen by measurement: XLA-compiled calls per batch bucket, checked, cached and served."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.main import create_app
from app.serving.compiled_calls import BucketChoice, BucketedCall, ChoiceCache, _crossover, bucket_sizes
from app.serving.signature_calls import signature_call
from genserve.conventions import latents_from_seeds
from tests.app.helpers import decode_npy, max_abs_diff
from tests.conftest import TINY_LATENT_DIM, TINY_MODEL, make_settings, wait_until_ready

MAX_BATCH = 16


@pytest.fixture(scope="module")
def signature(tiny_store: Path) -> Any:
    loaded = tf.saved_model.load(str(tiny_store / TINY_MODEL / "1"))
    signature = loaded.signatures["serving_default"]
    signature.owner = loaded  # the loaded model owns the variables the signature reads
    return signature


def latents(count: int) -> dict[str, np.ndarray]:
    return {"z": latents_from_seeds(range(count), TINY_LATENT_DIM)}


def cache_saying(folder: Path, version: Path, call: str) -> ChoiceCache:
    cache = ChoiceCache(folder, version, threads=1)
    cache.write([BucketChoice(bucket, 1, call) for bucket in bucket_sizes(MAX_BATCH)])  # type: ignore[arg-type]
    return cache


@pytest.mark.parametrize(
    ("plain_small", "plain_full", "compiled", "served_from"),
    [
        (10.0, 20.0, 8.0, 33),  # faster even than the plain call of the smallest batch: the whole bucket
        (10.0, 20.0, 15.0, 49),  # as fast as the plain call of 48 images: from 49 on
        (10.0, 20.0, 20.0, None),  # not faster for the full bucket: never
    ],
)
def test_the_compiled_call_serves_the_batches_it_is_faster_for(
    plain_small: float, plain_full: float, compiled: float, served_from: int | None
) -> None:
    assert _crossover(33, 64, plain_small, plain_full, compiled) == served_from


def test_a_bucket_serves_small_batches_plain_and_large_ones_compiled(signature: Any) -> None:
    calls = BucketedCall(signature, lambda inputs: {"images": np.zeros(1)}, max_batch_size=8)
    calls._compiled = {8: (7, lambda inputs: {"images": np.ones(1)})}

    assert [int(calls(latents(rows))["images"][0]) for rows in (5, 6, 7, 8)] == [0, 0, 1, 1]


def test_buckets_reach_the_largest_batch() -> None:
    assert bucket_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bucket_sizes(48) == [1, 2, 4, 8, 16, 32, 48]


def test_compiled_buckets_answer_every_batch_size_as_the_plain_call(
    signature: Any, tiny_store: Path, tmp_path: Path
) -> None:
    plain = signature_call(signature, on_cpu=True)
    calls = BucketedCall(signature, plain, max_batch_size=MAX_BATCH)

    choices = calls.tune(latents, cache_saying(tmp_path, tiny_store / TINY_MODEL / "1", "compiled"))

    assert [choice.call for choice in choices] == ["compiled"] * len(bucket_sizes(MAX_BATCH))
    assert calls.state == "chosen"
    for rows in (1, 3, 5, 9, 16):
        answer = calls(latents(rows))["images"]
        assert answer.shape == (rows, 28, 28, 3) and answer.dtype == np.uint8
        assert max_abs_diff(answer, np.asarray(plain(latents(rows))["images"])) <= 1


def test_a_bucket_the_cache_says_is_plain_is_not_compiled(
    signature: Any, tiny_store: Path, tmp_path: Path
) -> None:
    calls = BucketedCall(signature, signature_call(signature, on_cpu=True), max_batch_size=MAX_BATCH)

    calls.tune(latents, cache_saying(tmp_path, tiny_store / TINY_MODEL / "1", "plain"))

    assert calls._compiled == {}
    assert {choice.call for choice in calls.choices} == {"plain"}


def test_a_measured_choice_is_cached_and_read_back_without_measuring(
    signature: Any, tiny_store: Path, tmp_path: Path
) -> None:
    version = tiny_store / TINY_MODEL / "1"
    first = BucketedCall(signature, signature_call(signature, on_cpu=True), max_batch_size=4)

    measured = first.tune(latents, ChoiceCache(tmp_path, version, threads=1))

    assert all(choice.plain_ms is not None and choice.compiled_ms is not None for choice in measured)
    assert all(
        choice.call == ("compiled" if choice.reason.startswith("faster") else "plain") for choice in measured
    )
    [cached] = list(tmp_path.glob("*.json"))
    assert [item["bucket"] for item in json.loads(cached.read_text())["buckets"]] == [1, 2, 4]
    again = BucketedCall(signature, signature_call(signature, on_cpu=True), max_batch_size=4)
    assert again.tune(latents, ChoiceCache(tmp_path, version, threads=1)) == measured
    # Another thread count is another machine set-up: measured afresh.
    assert not ChoiceCache(tmp_path, version, threads=2).file.exists()


def test_a_changed_version_is_not_read_from_the_cache(tiny_store: Path, tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.mkdir()
    (version / "saved_model.pb").write_bytes(b"one")
    cache = ChoiceCache(tmp_path / "cache", version, threads=1)
    cache.write([BucketChoice(1, 1, "plain")])

    (version / "saved_model.pb").write_bytes(b"two!")

    assert ChoiceCache(tmp_path / "cache", version, threads=1).read() is None
    assert cache.read() == {1: BucketChoice(1, 1, "plain")}


@pytest.fixture(scope="module")
def tuned_client(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tiny_store,
        compiled_calls="auto",
        max_batch_size=8,
        model_call_cache=tmp_path_factory.mktemp("calls"),
    )
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        yield client


def test_models_shows_the_chosen_calls_and_images_stay_the_same(tuned_client: TestClient) -> None:
    before = decode_npy(tuned_client.post("/generate", params={"seed": 3, "n": 8, "format": "npy"}).content)
    deadline = time.monotonic() + 120
    calls: dict[str, Any] = {}
    while time.monotonic() < deadline:
        calls = tuned_client.get(f"/models/{TINY_MODEL}").json()["versions"][0]["model_calls"]
        if calls["state"] == "chosen":
            break
        time.sleep(0.2)

    assert calls["state"] == "chosen", calls
    assert [bucket["bucket"] for bucket in calls["buckets"]] == [1, 2, 4, 8]
    assert {bucket["call"] for bucket in calls["buckets"]} <= {"compiled", "plain"}
    after = decode_npy(tuned_client.post("/generate", params={"seed": 3, "n": 8, "format": "npy"}).content)
    assert max_abs_diff(after, before) <= 1
