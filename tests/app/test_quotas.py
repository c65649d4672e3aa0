"""Quotas per API key: token buckets of images and text tokens, 429 with Retry-After from the bucket, on every
route family and gRPC, counted in metrics, re-read with the keys file. Time is an injected clock throughout."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
import tensorflow as tf

from app.main import create_app
from app.server.api_keys import ApiKeys, read_key_file
from app.server.errors import LargerThanQuota, QuotaExceeded
from app.server.quotas import IMAGES, TOKENS, Client, Limit, Quota, Quotas, current_client, parse_quota
from tests.app.protocol_helpers import (
    TIMEOUT_S,
    combined_store,
    predict_request,
    rpc_error,
    seeded_latents,
    serving,
)
from tests.conftest import TINY_MODEL, make_settings
from tests.training.text.tiny import TINY_TEXT_MODEL

TEAM_A = "a" * 24
TEAM_B = "b" * 24
TEAM_C = "c" * 24


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def as_client(name: str, quota: Quota) -> Iterator[None]:
    token = current_client.set(Client(name, quota))
    try:
        yield
    finally:
        current_client.reset(token)


def test_a_keys_line_may_carry_a_quota_and_plain_lines_stay_valid() -> None:
    text = (
        f"team-a: {TEAM_A} images_per_s=2.5 images_burst=10\n"
        f"team-b: {TEAM_B}\n"
        f"team-c:\t{TEAM_C}  tokens_per_s=unlimited images_per_s=3\n"
    )

    keys = read_key_file(text)

    assert sorted(keys.names.values()) == ["team-a", "team-b", "team-c"]
    assert keys.quotas == {
        "team-a": {IMAGES: Limit(2.5, 10)},
        "team-c": {TOKENS: None, IMAGES: Limit(3, 3)},  # a burst defaults to one second of the rate
    }
    assert parse_quota("tokens_per_s=0.5") == {TOKENS: Limit(0.5, 1)}
    assert parse_quota("") == {}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"team-a: {TEAM_A} images=20", "line 1: 'team-a': unknown quota option 'images=20'"),
        (f"team-a: {TEAM_A} images_burst=5", "images_burst needs images_per_s"),
        (f"team-a: {TEAM_A} images_per_s=0", "images_per_s must be a positive number or unlimited"),
        (f"team-a: {TEAM_A} tokens_per_s=nan", "tokens_per_s must be a positive number"),
        (f"team-a: {TEAM_A} tokens_per_s=5 tokens_burst=0.5", "tokens_burst must be a number of at least 1"),
        (f"team-a: {TEAM_A} images_per_s=1 images_per_s=2", "images_per_s is given twice"),
        (
            f"team-a: {TEAM_A} images_per_s=1\nteam-a: {TEAM_B} images_per_s=2",
            "line 2: 'team-a' has another quota on an earlier line",
        ),
    ],
)
def test_a_bad_quota_names_its_line_and_option(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        read_key_file(line)


def test_a_bucket_lets_its_burst_through_then_says_when_it_will_hold_enough() -> None:
    clock = FakeClock()
    quotas = Quotas({}, clock=clock)
    with as_client("team-a", {IMAGES: Limit(per_s=0.5, burst=4)}):
        assert quotas.charge(IMAGES, 3) is not None
        with pytest.raises(QuotaExceeded) as refused:
            quotas.charge(IMAGES, 3)  # 1 left; 2 more take 4 s at 0.5/s
        clock.now += 1
        with pytest.raises(QuotaExceeded) as still_refused:
            quotas.charge(IMAGES, 3)  # 1.5 left; 1.5 more take 3 s
        clock.now += 3
        charge = quotas.charge(IMAGES, 3)
        assert charge is not None
        charge.refund()  # refused when queued: the images go back
        quotas.charge(IMAGES, 3)

    assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "4"}
    assert still_refused.value.retry_after_s == 3


def test_a_request_larger_than_the_burst_is_refused_without_a_retry_after() -> None:
    quotas = Quotas({}, clock=FakeClock())
    with as_client("team-a", {IMAGES: Limit(per_s=10, burst=4)}), pytest.raises(LargerThanQuota) as refused:
        quotas.charge(IMAGES, 5)

    assert refused.value.status_code == 429 and refused.value.code == "larger_than_quota"
    assert refused.value.headers == {} and "ask for fewer" in refused.value.message


def test_a_keys_own_limit_wins_over_the_default_unit_by_unit() -> None:
    quotas = Quotas({IMAGES: Limit(1, 2), TOKENS: Limit(1, 10)}, clock=FakeClock())

    assert quotas.charge(IMAGES, 1000) is None  # no client (no keys file): nothing is counted
    with as_client("default", {}), pytest.raises(LargerThanQuota):
        quotas.charge(IMAGES, 3)
    with as_client("own", {IMAGES: None}):
        assert quotas.charge(IMAGES, 1000) is None  # unlimited images ...
        with pytest.raises(LargerThanQuota):
            quotas.charge(TOKENS, 11)  # ... and the default's tokens
    with as_client("bigger", {IMAGES: Limit(1, 50)}):
        assert quotas.charge(IMAGES, 50) is not None


def test_a_rewritten_keys_file_changes_the_rates(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"team-a: {TEAM_A} images_per_s=1 images_burst=2\n")
    clock = FakeClock()
    keys = ApiKeys.load(path, clock=clock)
    quotas = Quotas({}, clock=clock)

    def charge(images: int) -> None:
        client = keys.client_of(TEAM_A)
        assert client is not None
        with as_client(client.name, client.quota):
            quotas.charge(IMAGES, images)

    charge(2)
    path.write_text(f"team-a: {TEAM_A} images_per_s=10 images_burst=20\n")
    os.utime(path, ns=(1, 1))  # a new stamp, whatever the file system's resolution
    clock.now += 1.5  # past the once-a-second look at the file; 1.5 images refilled at the old rate
    charge(1)
    with pytest.raises(QuotaExceeded) as refused:
        charge(20)  # larger than the old burst, within the new one

    assert refused.value.retry_after_s == 2  # 19.5 missing at the new 10/s


@asynccontextmanager
async def clocked_app(store: Path, clock: FakeClock, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """The app over `store` with its quotas on `clock`, once every model serves."""
    app = create_app(make_settings(store, **overrides))
    app.state.quotas = Quotas(
        parse_quota(app.state.settings.quota_default or ""), app.state.metrics, clock=clock
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            deadline = time.monotonic() + 60
            while not await _every_model_serves(client):
                assert time.monotonic() < deadline, "models did not load"
                await asyncio.sleep(0.05)
            yield client


async def _every_model_serves(client: httpx.AsyncClient) -> bool:
    models = (await client.get("/models", headers={"X-API-Key": TEAM_B})).json()["models"]
    return len(models) == 2 and all(model["latest_available"] is not None for model in models)


def test_keys_over_their_quota_get_429_in_each_routes_shape(
    tiny_store: Path, tiny_text_version: Path, tmp_path: Path
) -> None:
    store = combined_store(tmp_path / "store", tiny_store, tiny_text_version.parent.parent)
    keys = tmp_path / "keys.txt"
    keys.write_text(
        f"team-a: {TEAM_A} images_per_s=0.5 images_burst=2 tokens_per_s=2 tokens_burst=40\nteam-b: {TEAM_B}\n"
    )
    clock = FakeClock()
    a, b = {"X-API-Key": TEAM_A}, {"Authorization": f"Bearer {TEAM_B}"}
    predict = f"/v1/models/{TINY_MODEL}:predict"
    one_latent = {"instances": seeded_latents([5]).tolist()}

    async def scenario() -> dict[str, httpx.Response]:
        answers: dict[str, httpx.Response] = {}
        async with clocked_app(
            store, clock, api_keys_file=keys, quota_default="images_per_s=100 images_burst=4"
        ) as client:
            generate = f"/generate?model={TINY_MODEL}"
            answers["burst"] = await client.post(f"{generate}&n=2&seed=1", headers=a)
            answers["over"] = await client.post(f"{generate}&n=1&seed=3", headers=a)
            clock.now += 1
            answers["protocol"] = await client.post(predict, json=one_latent, headers=a)
            clock.now += 1
            answers["refilled"] = await client.post(predict, json=one_latent, headers=a)
            answers["default"] = await client.post(f"{generate}&n=4&seed=1", headers=b)
            answers["too large"] = await client.post(f"{generate}&n=5&seed=1", headers=b)
            text = {"model": TINY_TEXT_MODEL, "prompt": "A ", "n": 2, "seed": 1}
            answers["text"] = await client.post("/generate", json={**text, "max_new_tokens": 10}, headers=a)
            completion = {"model": TINY_TEXT_MODEL, "prompt": "A ", "n": 2, "max_tokens": 15}
            answers["openai"] = await client.post("/openai/v1/completions", json=completion, headers=a)
            answers["metrics"] = await client.get("/metrics")
        return answers

    answers = asyncio.run(scenario())

    assert answers["burst"].status_code == 200
    over = answers["over"]
    assert over.status_code == 429 and over.headers["retry-after"] == "2"  # 1 image at 0.5/s
    assert over.json()["error"]["code"] == "quota_exceeded"
    assert "'team-a' is over its quota of 0.5 images per second" in over.json()["error"]["message"]
    protocol = answers["protocol"]
    assert protocol.status_code == 429 and protocol.headers["retry-after"] == "1"  # 0.5 refilled, 0.5 to go
    assert set(protocol.json()) == {"error"} and "over its quota" in protocol.json()["error"]
    assert answers["refilled"].status_code == 200
    assert answers["default"].status_code == 200
    too_large = answers["too large"]
    assert too_large.status_code == 429 and "retry-after" not in too_large.headers
    assert too_large.json()["error"]["code"] == "larger_than_quota"
    assert answers["text"].status_code == 200, answers["text"].text  # 20 of 40 tokens
    openai = answers["openai"]
    assert openai.status_code == 429 and openai.headers["retry-after"] == "5"  # 30 asked, 20 left, 2/s
    assert openai.json()["error"]["type"] == "tokens" and openai.json()["error"]["code"] == "quota_exceeded"
    metrics = answers["metrics"].text
    assert 'genserve_quota_refusals_total{key="team-a",unit="images"} 2.0' in metrics
    assert 'genserve_quota_refusals_total{key="team-a",unit="tokens"} 1.0' in metrics
    assert 'genserve_quota_refusals_total{key="team-b",unit="images"} 1.0' in metrics
    assert 'genserve_quota_remaining{key="team-a",unit="images"} 0.0' in metrics
    assert 'genserve_quota_remaining{key="team-a",unit="tokens"} 20.0' in metrics


def test_a_grpc_call_over_its_quota_is_resource_exhausted(tiny_store: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"team-a: {TEAM_A} images_per_s=0.001 images_burst=2\n")
    metadata = [("authorization", f"Bearer {TEAM_A}")]

    def predict(seeds: list[int]) -> object:
        request = predict_request(TINY_MODEL, z=tf.make_tensor_proto(seeded_latents(seeds)))
        return served.prediction.Predict(request, timeout=TIMEOUT_S, metadata=metadata)

    with serving(tiny_store, http_headers={"X-API-Key": TEAM_A}, api_keys_file=keys) as served:
        predict([1, 2])
        over = rpc_error(lambda: predict([3]))
        too_large = rpc_error(lambda: predict([4, 5, 6]))
        metrics = served.http.get("/metrics").text

    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "over its quota" in str(over.details())
    retry_after = dict(over.trailing_metadata() or ())["retry-after"]
    assert int(retry_after) >= 1
    assert too_large.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "ask for fewer" in str(
        too_large.details()
    )
    assert 'genserve_quota_refusals_total{key="team-a",unit="images"} 2.0' in metrics
