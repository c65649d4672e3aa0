"""OpenAI's completions API over the tiny char-rnn: the answers' shapes, seeded text equal to `POST /generate`'s,
stop sequences, streaming, the model list, errors in OpenAI's shape, and the official `openai` client against a
real server process."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from app.main import create_app
from app.protocols.openai import serving
from app.server.errors import DeadlineExceeded
from app.text.batching import TokenEvent
from app.text.generation import TextStream
from app.text.servable import text_servable
from tests.app.protocol_helpers import combined_store, serving_process
from tests.conftest import TINY_MODEL, make_settings
from tests.training.text.tiny import TINY_TEXT_MODEL

COMPLETIONS = "/openai/v1/completions"
MAX_N = 6
MAX_NEW_TOKENS = 40
# Below MAX_N, so that a request for more choices than this cannot be queued: a 503 on demand.
MAX_QUEUED_SEQUENCES = 4
MAX_REQUEST_TOKENS = 300


@pytest.fixture(scope="module")
def model_store(tiny_store: Path, tiny_text_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny image model and the tiny text model side by side, linked, not copied."""
    root = tmp_path_factory.mktemp("openai-store")
    return combined_store(root / "store", tiny_store, tiny_text_version.parent.parent)


@pytest.fixture(scope="module")
def api(model_store: Path) -> Iterator[TestClient]:
    settings = make_settings(
        model_store,
        default_model=TINY_TEXT_MODEL,
        max_n=MAX_N,
        max_new_tokens=MAX_NEW_TOKENS,
        max_queued_sequences=MAX_QUEUED_SEQUENCES,
        max_text_request_tokens=MAX_REQUEST_TOKENS,
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while not _all_loaded(client):
            assert time.monotonic() < deadline, "models did not load"
            time.sleep(0.05)
        yield client


def _all_loaded(client: TestClient) -> bool:
    models = client.get("/models").json().get("models", [])
    return len(models) == 2 and all(model["latest_available"] is not None for model in models)


def complete(client: TestClient, **fields: Any) -> httpx.Response:
    return client.post(COMPLETIONS, json={"model": TINY_TEXT_MODEL, **fields})


def generated(client: TestClient, **fields: Any) -> list[dict[str, Any]]:
    """`POST /generate`'s completions for the same fields."""
    response = client.post("/generate", json={"model": TINY_TEXT_MODEL, **fields})
    assert response.status_code == 200, response.text
    completions: list[dict[str, Any]] = response.json()["completions"]
    return completions


def openai_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def stream_chunks(body: str) -> list[Any]:
    """The `data:` payloads of a server-sent event stream, `[DONE]` as the string."""
    payloads = [block.removeprefix("data: ") for block in body.strip().split("\n\n")]
    return [payload if payload == "[DONE]" else json.loads(payload) for payload in payloads]


def test_seeded_choices_equal_generates_text_for_each_prompt(api: TestClient) -> None:
    sampling = {"seed": 7, "temperature": 0.8, "top_p": 0.9, "n": 2}
    started = int(time.time())
    response = complete(api, prompt=["The cat ", "A dog "], max_tokens=24, **sampling)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == f"{TINY_TEXT_MODEL}:1" and started - 1 <= body["created"] <= time.time() + 1
    assert response.headers["X-Model"] == TINY_TEXT_MODEL and response.headers["X-Model-Version"] == "1"
    expected = [
        *generated(api, prompt="The cat ", max_new_tokens=24, **sampling),
        *generated(api, prompt="A dog ", max_new_tokens=24, **sampling),
    ]
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2, 3]
    assert [choice["text"] for choice in body["choices"]] == [each["text"] for each in expected]
    assert [choice["finish_reason"] for choice in body["choices"]] == [
        openai_reason(each["finish_reason"]) for each in expected
    ]
    assert all(choice["text"] and choice["logprobs"] is None for choice in body["choices"])
    completion_tokens = sum(each["tokens"] for each in expected)
    assert body["usage"] == {
        "prompt_tokens": len("The cat ") + len("A dog "),
        "completion_tokens": completion_tokens,
        "total_tokens": len("The cat A dog ") + completion_tokens,
    }
    # One batcher and one set of metrics for both APIs.
    metrics = api.get("/metrics").text
    assert f'genserve_text_tokens_generated_total{{model="{TINY_TEXT_MODEL}",version="1"}}' in metrics
    assert f'route="{COMPLETIONS}"' in metrics


def test_a_stop_sequence_cuts_the_text_and_finishes_with_stop(api: TestClient) -> None:
    greedy = {"prompt": "The ", "temperature": 0, "max_tokens": MAX_NEW_TOKENS}
    whole = complete(api, **greedy).json()["choices"][0]
    text = whole["text"]
    assert len(text) > 6, text
    stop = text[4:6]
    cut = text[: text.index(stop)]

    for stops in (stop, [stop, "never seen"]):
        response = complete(api, stop=stops, **greedy)
        assert response.status_code == 200, response.text
        [choice] = response.json()["choices"]
        assert choice == {"index": 0, "text": cut, "logprobs": None, "finish_reason": "stop"}
    assert whole["finish_reason"] == openai_reason(
        generated(api, prompt="The ", temperature=0, max_new_tokens=MAX_NEW_TOKENS)[0]["finish_reason"]
    )


def test_a_stream_sends_openai_chunks_then_usage_then_done(api: TestClient) -> None:
    fields: dict[str, Any] = {"prompt": ["The cat ", "A dog "], "max_tokens": 20, "seed": 3}
    whole = complete(api, **fields).json()
    response = complete(api, stream=True, stream_options={"include_usage": True}, **fields)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, usage, done = stream_chunks(response.text)
    assert done == "[DONE]"
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    texts, reasons = ["", ""], [None, None]
    for chunk in chunks:
        assert chunk["id"] == usage["id"] and chunk["id"].startswith("cmpl-")
        assert chunk["object"] == "text_completion" and chunk["model"] == f"{TINY_TEXT_MODEL}:1"
        [choice] = chunk["choices"]
        assert reasons[choice["index"]] is None, "a chunk after its choice finished"
        texts[choice["index"]] += choice["text"]
        reasons[choice["index"]] = choice["finish_reason"]
    assert texts == [choice["text"] for choice in whole["choices"]]
    assert reasons == [choice["finish_reason"] for choice in whole["choices"]]


def test_an_error_while_streaming_is_sent_as_an_openai_error_chunk_then_done(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def events_then_deadline(self: TextStream) -> AsyncIterator[TokenEvent]:
        yield TokenEvent(0, "Th")
        raise DeadlineExceeded("the request deadline passed before its text was generated")

    monkeypatch.setattr(TextStream, "events", events_then_deadline)
    response = complete(api, prompt="A ", stream=True)

    assert response.status_code == 200
    first, error, done = stream_chunks(response.text)
    assert first["choices"] == [{"index": 0, "text": "Th", "logprobs": None, "finish_reason": None}]
    assert error == {
        "error": {
            "message": "the request deadline passed before its text was generated",
            "type": "server_error",
            "param": None,
            "code": "deadline_exceeded",
        }
    }
    assert done == "[DONE]"


def test_models_lists_the_text_models_in_openais_shape(api: TestClient) -> None:
    listed = api.get("/openai/v1/models")
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    [card] = body["data"]  # the image model is not listed
    assert card["id"] == TINY_TEXT_MODEL and card["object"] == "model" and card["owned_by"] == "genserve"
    assert 1_600_000_000 < card["created"] <= time.time()

    one = api.get(f"/openai/v1/models/{TINY_TEXT_MODEL}")
    assert one.status_code == 200 and one.json() == card
    for name in (TINY_MODEL, "no-such-model"):
        missing = api.get(f"/openai/v1/models/{name}")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "invalid_request_error"
        assert name in missing.json()["error"]["message"]


def test_a_version_or_label_may_follow_the_model_name(api: TestClient) -> None:
    for model in (f"{TINY_TEXT_MODEL}:1", f"{TINY_TEXT_MODEL}:stable", f"{TINY_TEXT_MODEL}:latest"):
        response = complete(api, model=model, prompt="A ", max_tokens=4, seed=1)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == f"{TINY_TEXT_MODEL}:1"
    missing = complete(api, model=f"{TINY_TEXT_MODEL}:9", prompt="A ")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "version_not_found"


def test_harmless_openai_fields_are_accepted(api: TestClient) -> None:
    response = complete(
        api,
        prompt="A ",
        max_tokens=4,
        user="someone",
        logit_bias={},
        echo=False,
        best_of=1,
        presence_penalty=0,
        frequency_penalty=0.0,
        suffix=None,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("fields", "status", "param", "says"),
    [
        ({"max_tokens": MAX_NEW_TOKENS + 1}, 400, "max_tokens", f"between 1 and {MAX_NEW_TOKENS}"),
        ({"temperature": -1}, 400, "temperature", "between 0"),
        ({"top_p": 0}, 400, "top_p", "(0, 1]"),
        ({"n": 0}, 400, "n", f"between 1 and {MAX_N}"),
        ({"prompt": ["a", "b", "c"], "n": 3}, 400, "n", f"9 choices, over the limit of {MAX_N}"),
        ({"prompt": ["x" * 50] * 4, "max_tokens": 40}, 400, "prompt", f"limit of {MAX_REQUEST_TOKENS}"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4 stop sequences"),
        ({"stop": 5}, 400, "stop", "a string or a list of strings"),
        ({"prompt": [1, 2, 3]}, 400, "prompt", "token ids are not taken"),
        ({"prompt": "é€"}, 400, "prompt", "outside the vocabulary"),
        ({"seed": "7"}, 400, "seed", "integer"),
        ({"echo": True}, 400, "echo", "not supported"),
        ({"logprobs": 2}, 400, "logprobs", "not supported"),
        ({"best_of": 3}, 400, "best_of", "not supported"),
        ({"suffix": "!"}, 400, "suffix", "not supported"),
        ({"logit_bias": {"5": 1}}, 400, "logit_bias", "not supported"),
        ({"presence_penalty": 0.5}, 400, "presence_penalty", "not supported"),
        ({"functions": []}, 400, "functions", "not permitted"),
        ({"model": TINY_MODEL}, 400, "model", "generates images"),
        ({"model": "no-such-model"}, 404, None, "not found"),
    ],
)
def test_a_bad_request_answers_openais_error_shape_naming_the_field(
    api: TestClient, fields: dict[str, Any], status: int, param: str | None, says: str
) -> None:
    response = complete(api, **{"prompt": "A ", **fields})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"] and "max_new_tokens" not in error["message"]
    if param is not None:
        assert error["message"].startswith(f"{param}: ")


def test_a_body_that_is_not_json_is_a_400(api: TestClient) -> None:
    response = api.post(COMPLETIONS, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "body: not valid JSON"


def test_a_full_queue_is_a_503_with_retry_after_and_nothing_left_queued(api: TestClient) -> None:
    for fields in ({"n": MAX_QUEUED_SEQUENCES + 1}, {"prompt": ["The ", "A "], "n": 3}):
        response = complete(api, **{"prompt": "The ", **fields})
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
        error = response.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "overloaded"
    # The second request's first prompt was queued, then dropped with the rest.
    model_version = api.app.state.registry.resolve(TINY_TEXT_MODEL, None)  # type: ignore[attr-defined]
    assert text_servable(model_version).batcher.pending() == 0


def test_an_unexpected_error_is_a_500_without_its_details(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(serving, "text_request", broken)
    response = complete(api, prompt="A ")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "internal server error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }


def test_a_missing_api_key_is_refused_in_openais_shape(model_store: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("tests: a-key-of-sixteen-or-more\n")
    with TestClient(create_app(make_settings(model_store, api_keys_file=keys))) as client:
        response = client.get("/openai/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["code"] == "unauthorized"


def test_the_openai_client_completes_streams_and_lists_models(model_store: Path, tmp_path: Path) -> None:
    with serving_process(model_store, tmp_path / "server.log") as base_url:
        client = OpenAI(base_url=f"{base_url}/openai/v1", api_key="unused", max_retries=0, timeout=30)
        fields: dict[str, Any] = {"prompt": "The cat ", "max_tokens": 16, "seed": 5, "temperature": 0.7}

        completion = client.completions.create(model=TINY_TEXT_MODEL, n=2, **fields)
        expected = httpx.post(
            f"{base_url}/generate",
            json={
                "model": TINY_TEXT_MODEL,
                "n": 2,
                "prompt": "The cat ",
                "max_new_tokens": 16,
                "seed": 5,
                "temperature": 0.7,
            },
            timeout=30,
        ).json()["completions"]
        assert [choice.text for choice in completion.choices] == [each["text"] for each in expected]
        assert [choice.index for choice in completion.choices] == [0, 1]
        assert completion.model == f"{TINY_TEXT_MODEL}:1" and completion.object == "text_completion"
        assert completion.usage is not None and completion.usage.prompt_tokens == len("The cat ")

        streamed = ""
        reasons = []
        for chunk in client.completions.create(model=TINY_TEXT_MODEL, stream=True, **fields):
            streamed += chunk.choices[0].text
            reasons.append(chunk.choices[0].finish_reason)
        assert streamed == completion.choices[0].text != ""
        assert reasons[-1] == completion.choices[0].finish_reason and set(reasons[:-1]) == {None}

        assert [model.id for model in client.models.list()] == [TINY_TEXT_MODEL]
