"""Text generation over HTTP with a tiny real char-rnn: JSON, plain text, streaming, seeds, continuous
batching, stop sequences, 422s, overload, deadlines, disconnects, drain and metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from app.server.errors import ClientDisconnected
from app.server.shutdown import drain
from app.text import runtime as text_runtime
from app.text.batching import Sampling
from app.text.generation import TextRequest
from app.text.servable import text_servable
from tests.app.helpers import running_app
from tests.app.text_calls import StepRecorder
from tests.conftest import TINY_MODEL
from tests.training.text.tiny import TINY_TEXT_MODEL, train_tiny_text

# A prompt of grammar text: the model reads it one step per character, so a request carrying it runs for at
# least this many steps whatever it samples.
LONG_PROMPT = "The cat sees the moon. A dog likes a red ball. My friend finds the river. " * 3


@pytest.fixture(scope="module")
def text_store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny image store plus the tiny text model, so both kinds are served side by side."""
    root = tmp_path_factory.mktemp("text-app")
    store = root / "model_store"
    shutil.copytree(tiny_store, store)
    train_tiny_text(store, root / "runs")
    return store


def generate(client: httpx.AsyncClient, **fields: Any) -> Any:
    return client.post("/generate", params={"model": TINY_TEXT_MODEL}, json=fields)


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def wait_all_loaded(client: httpx.AsyncClient) -> None:
    """Versions load one at a time; /readyz only waits for the default model."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        models = (await client.get("/models")).json()["models"]
        if all(m["latest_available"] is not None for m in models) and len(models) == 2:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("models did not load")


def run(scenario: Any) -> None:
    asyncio.run(scenario())


@pytest.fixture
def store(text_store: Path) -> Iterator[Path]:
    yield text_store


def test_text_model_continues_the_prompt_as_json(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            response = await generate(client, prompt="The cat ", n=2, max_new_tokens=24, seed=7)
            assert response.status_code == 200
            body = response.json()
            assert body["model"] == TINY_TEXT_MODEL and body["prompt"] == "The cat "
            assert [c["seed"] for c in body["completions"]] == [7, 8]
            for completion in body["completions"]:
                assert completion["finish_reason"] in ("length", "end_of_text")
                assert 0 < len(completion["text"]) <= 24 and completion["tokens"] <= 24
            assert response.headers["X-Seeds"] == "7-8" and response.headers["X-Model-Version"] == "1"
            plain = await generate(client, prompt="The cat ", max_new_tokens=24, seed=7, format="text")
            assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
            assert plain.text == body["completions"][0]["text"]

    run(scenario)


def test_the_same_seed_gives_the_same_text_alone_and_batched_with_others(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            fields = {"prompt": "A dog ", "max_new_tokens": 40, "seed": 123, "temperature": 1.0}
            alone = (await generate(client, **fields)).json()["completions"][0]["text"]
            others = [
                generate(client, prompt=p, n=3, max_new_tokens=60, seed=i) for i, p in enumerate(["", "The "])
            ]
            responses = await asyncio.gather(generate(client, **fields), *others)
            assert all(r.status_code == 200 for r in responses)
            assert responses[0].json()["completions"][0]["text"] == alone

    run(scenario)


def test_a_short_request_finishes_while_a_long_one_runs_and_they_share_steps(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = StepRecorder(monkeypatch, delay_s=0.002)

    async def scenario() -> None:
        async with running_app(store) as client:
            recorder.batch_sizes.clear()
            long_request = asyncio.create_task(
                generate(client, prompt=LONG_PROMPT, max_new_tokens=200, temperature=0.0, seed=1)
            )
            while not recorder.batch_sizes:
                await asyncio.sleep(0.005)
            short = await generate(client, prompt="", n=2, max_new_tokens=3, seed=2)
            assert short.status_code == 200 and not long_request.done()
            long_response = await long_request
            assert long_response.status_code == 200
            # The long request stepped alone, then with the short one's two sequences, then alone again.
            sizes = recorder.batch_sizes
            assert sizes[0] == 1 and max(sizes) == 3 and sizes[-1] == 1
            # Its prompt was read in one prefill call: a step for each sampled token after the first.
            assert len(sizes) == long_response.json()["completions"][0]["tokens"] - 1


def _completions_and_steps(
    store: Path, monkeypatch: pytest.MonkeyPatch, *, prefill: bool
) -> tuple[list[str], int]:
    """A seeded request for two sequences after a long prompt, read by prefill or step by step: its texts and
    the step calls it took."""
    recorder = StepRecorder(monkeypatch)
    reads_whole = text_runtime.TextRuntime.can_prefill.fget  # type: ignore[attr-defined]
    monkeypatch.setattr(
        text_runtime.TextRuntime, "can_prefill", property(lambda runtime: prefill and reads_whole(runtime))
    )
    texts: list[str] = []

    async def scenario() -> None:
        async with running_app(store) as client:
            recorder.batch_sizes.clear()
            response = await generate(client, prompt=LONG_PROMPT, n=2, max_new_tokens=30, seed=5)
            assert response.status_code == 200
            texts.extend(c["text"] for c in response.json()["completions"])

    run(scenario)
    return texts, len(recorder.batch_sizes)


def test_a_prompt_read_in_one_call_gives_the_text_of_one_read_step_by_step(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, whole_steps = _completions_and_steps(store, monkeypatch, prefill=True)
    stepped, stepped_steps = _completions_and_steps(store, monkeypatch, prefill=False)

    assert whole == stepped and whole[0] != whole[1]
    assert whole_steps < 30 <= len(LONG_PROMPT) < stepped_steps


def test_stream_sends_one_event_per_token_then_the_finish_reason(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            response = await generate(client, prompt="The ", max_new_tokens=12, seed=3, stream=True)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response.text)
            tokens = [data["text"] for name, data in events if name == "token"]
            finish = [data for name, data in events if name == "finish"]
            assert events[-1][0] == "done" and len(finish) == 1
            assert all(len(token) == 1 for token in tokens)
            assert "".join(tokens) == finish[0]["text"]
            same = await generate(client, prompt="The ", max_new_tokens=12, seed=3)
            assert same.json()["completions"][0]["text"] == finish[0]["text"]

    run(scenario)


def test_a_stop_sequence_cuts_the_text_before_it(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            fields = {"prompt": "The cat ", "max_new_tokens": 40, "temperature": 0.0}
            full = (await generate(client, **fields)).json()["completions"][0]["text"]
            stop = full[6:8]
            cut = (await generate(client, **fields, stop=[stop])).json()["completions"][0]
            assert cut["finish_reason"] == "stop" and cut["text"] == full[: full.index(stop)]
            streamed = sse_events((await generate(client, **fields, stop=[stop], stream=True)).text)
            assert "".join(d["text"] for n, d in streamed if n == "token") == cut["text"]

    run(scenario)


OUT_OF_PLACE = [
    (TINY_TEXT_MODEL, {"truncation": 0.5}, "truncation"),
    (TINY_TEXT_MODEL, {"cols": 2}, "cols"),
    (TINY_TEXT_MODEL, {"format": "png"}, "format"),
    (TINY_TEXT_MODEL, {"max_new_tokens": 100_000}, "max_new_tokens"),
    (TINY_TEXT_MODEL, {"temperature": -1}, "temperature"),
    (TINY_TEXT_MODEL, {"top_p": 0}, "top_p"),
    (TINY_TEXT_MODEL, {"top_k": 0}, "top_k"),
    (TINY_TEXT_MODEL, {"prompt": "caf\u00e9 \u00a7"}, "prompt"),
    (TINY_TEXT_MODEL, {"stop": [""]}, "stop"),
    (TINY_MODEL, {"prompt": "hello"}, "prompt"),
    (TINY_MODEL, {"max_new_tokens": 5}, "max_new_tokens"),
    (TINY_MODEL, {"format": "text"}, "format"),
]


def test_options_of_the_other_kind_or_out_of_range_are_422_naming_the_field(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            await wait_all_loaded(client)
            for model, fields, field in OUT_OF_PLACE:
                response = await client.post("/generate", params={"model": model}, json=fields)
                assert response.status_code == 422, (model, fields)
                assert response.json()["error"]["message"].startswith(f"{field}:")

    run(scenario)


def test_image_generation_is_unchanged_beside_a_text_model(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            await wait_all_loaded(client)
            response = await client.post("/generate", params={"model": TINY_MODEL, "n": 4, "seed": 1})
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            walk = await client.get("/interpolate", params={"model": TINY_TEXT_MODEL, "start": 1, "end": 2})
            assert walk.status_code == 422 and walk.json()["error"]["message"].startswith("model:")

    run(scenario)


def test_a_full_queue_answers_503_with_retry_after(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = StepRecorder(monkeypatch)

    async def scenario() -> None:
        async with running_app(store, max_active_sequences=1, max_queued_sequences=1) as client:
            recorder.release.clear()
            recorder.started.clear()
            busy = asyncio.create_task(generate(client, max_new_tokens=4, seed=1))
            await asyncio.to_thread(recorder.started.wait, 10)
            waiting = asyncio.create_task(generate(client, max_new_tokens=4, seed=2))
            await asyncio.sleep(0.05)
            refused = await generate(client, max_new_tokens=4, seed=3)
            assert refused.status_code == 503
            assert (
                refused.json()["error"]["code"] == "overloaded" and int(refused.headers["Retry-After"]) >= 1
            )
            recorder.release.set()
            assert (await busy).status_code == 200 and (await waiting).status_code == 200

    run(scenario)


def test_a_request_past_its_deadline_gets_504(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StepRecorder(monkeypatch, delay_s=0.2)

    async def scenario() -> None:
        async with running_app(store, request_timeout_s=0.3) as client:
            response = await generate(client, prompt=LONG_PROMPT, max_new_tokens=200)
            assert response.status_code == 504 and response.json()["error"]["code"] == "deadline_exceeded"

    run(scenario)


def test_a_client_that_disconnects_has_its_sequences_dropped(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    StepRecorder(monkeypatch, delay_s=0.05)

    async def scenario() -> None:
        async with running_app(store) as client:
            app = client._transport.app  # type: ignore[attr-defined]
            model_version = app.state.registry.resolve(TINY_TEXT_MODEL, None)
            gone = asyncio.Event()

            async def receive() -> dict[str, Any]:
                await gone.wait()
                return {"type": "http.disconnect"}

            request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
            service = app.state.text_generation
            stream = service.start(
                model_version,
                TextRequest(LONG_PROMPT, [1, 2], Sampling(max_new_tokens=100)),
                http_request=request,
            )
            completing = asyncio.create_task(service.complete(stream, http_request=request))
            await asyncio.sleep(0.1)
            assert text_servable(model_version).batcher.active_sequences == 2
            gone.set()
            with pytest.raises(ClientDisconnected):
                await completing
            deadline = time.monotonic() + 5
            while text_servable(model_version).batcher.active_sequences and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert text_servable(model_version).batcher.active_sequences == 0

    run(scenario)


def test_draining_finishes_text_requests_already_running(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    StepRecorder(monkeypatch, delay_s=0.002)

    async def scenario() -> None:
        async with running_app(store) as client:
            registry = client._transport.app.state.registry  # type: ignore[attr-defined]
            running = asyncio.create_task(generate(client, prompt=LONG_PROMPT, max_new_tokens=10))
            while registry.pending_work() == 0:
                await asyncio.sleep(0.005)
            assert await drain(registry, grace_s=20)
            assert (await running).status_code == 200
            assert (await generate(client, max_new_tokens=3)).status_code == 503

    run(scenario)


def test_metrics_and_models_describe_the_text_model(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            await wait_all_loaded(client)
            assert (await generate(client, prompt="The ", n=2, max_new_tokens=5, seed=1)).status_code == 200
            page = (await client.get("/metrics")).text
            labels = f'model="{TINY_TEXT_MODEL}",version="1"'
            assert f"genserve_text_tokens_generated_total{{{labels}}}" in page
            assert f"genserve_text_step_sequences_count{{{labels}}}" in page
            assert f"genserve_text_step_seconds_count{{{labels}}}" in page
            assert f"genserve_text_time_to_first_token_seconds_count{{{labels}}} 1.0" in page
            models = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
            version = models[TINY_TEXT_MODEL]["versions"][0]
            assert version["kind"] == "char-rnn" and version["capabilities"] == ["generate_text", "stream"]
            assert (
                version["evaluation"]["bits_per_char"]
                < version["evaluation"]["details"]["unigram_bits_per_char"]
            )
            assert version["batching"]["tokens"] >= 2
            assert models[TINY_MODEL]["versions"][0]["kind"] == "dcgan"

    run(scenario)


def test_a_tiny_temperature_gives_exactly_the_greedy_text(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            fields = {"prompt": "The cat ", "n": 3, "max_new_tokens": 40, "seed": 5}
            greedy = await generate(client, **fields, temperature=0.0)
            tiny = await generate(client, **fields, temperature=1e-310)
            assert greedy.status_code == 200 and tiny.status_code == 200
            assert tiny.json()["completions"] == greedy.json()["completions"]

    run(scenario)


def test_a_request_over_the_token_budget_is_422_naming_its_fields(store: Path) -> None:
    async def scenario() -> None:
        async with running_app(store) as client:
            prompt = (LONG_PROMPT * 20)[:4096]
            response = await generate(client, prompt=prompt, n=64, max_new_tokens=512)
            assert response.status_code == 422
            message = response.json()["error"]["message"]
            assert message.startswith("n:")
            assert "n × (prompt length + max_new_tokens) = 64 × (4096 + 512) = 294912" in message
            assert "65536" in message and "GENSERVE_MAX_TEXT_REQUEST_TOKENS" in message
        async with running_app(store, max_text_request_tokens=100) as client:
            at_limit = await generate(client, prompt="The ", n=4, max_new_tokens=21)
            assert at_limit.status_code == 200 and len(at_limit.json()["completions"]) == 4
            over = await generate(client, prompt="The ", n=4, max_new_tokens=22)
            assert over.status_code == 422
            assert "4 × (4 + 22) = 104" in over.json()["error"]["message"]

    run(scenario)


def test_a_small_request_is_admitted_before_the_rest_of_a_large_one(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = StepRecorder(monkeypatch)

    async def scenario() -> None:
        async with running_app(store, max_active_sequences=2) as client:
            app = client._transport.app  # type: ignore[attr-defined]
            model_version = app.state.registry.resolve(TINY_TEXT_MODEL, None)
            batcher = text_servable(model_version).batcher
            service = app.state.text_generation
            recorder.release.clear()
            recorder.started.clear()
            large = service.start(model_version, TextRequest("", list(range(8)), Sampling(max_new_tokens=30)))
            collecting = asyncio.create_task(service.complete(large))
            await asyncio.to_thread(recorder.started.wait, 10)  # its first two sequences' step is held
            small = asyncio.create_task(generate(client, max_new_tokens=5, seed=1))
            while batcher.queued_sequences < 7:
                await asyncio.sleep(0.005)
            recorder.release.set()
            assert (await small).status_code == 200
            result = await collecting
            assert all(completion.finish_reason for completion in result.completions)
            # The small request took the third place: the large one's remaining six came after it.
            assert [seq.admitted for seq in large.sequences] == [0, 1, 3, 4, 5, 6, 7, 8]

    run(scenario)


def test_metrics_show_active_and_queued_text_sequences(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = StepRecorder(monkeypatch)
    labels = f'model="{TINY_TEXT_MODEL}",version="1"'

    async def scenario() -> None:
        async with running_app(store, max_active_sequences=1) as client:
            await wait_all_loaded(client)
            recorder.release.clear()
            recorder.started.clear()
            first = asyncio.create_task(generate(client, max_new_tokens=4, seed=1))
            await asyncio.to_thread(recorder.started.wait, 10)
            second = asyncio.create_task(generate(client, n=2, max_new_tokens=4, seed=2))
            page = ""
            deadline = time.monotonic() + 10
            while f"genserve_text_queue_depth_sequences{{{labels}}} 2.0" not in page:
                assert time.monotonic() < deadline, "the two queued sequences never showed"
                await asyncio.sleep(0.005)
                page = (await client.get("/metrics")).text
            assert f"genserve_text_active_sequences{{{labels}}} 1.0" in page
            recorder.release.set()
            assert (await first).status_code == 200 and (await second).status_code == 200
            page = (await client.get("/metrics")).text
            assert f"genserve_text_active_sequences{{{labels}}} 0.0" in page
            assert f"genserve_text_queue_depth_sequences{{{labels}}} 0.0" in page

    run(scenario)
