"""Request ids and structured logs: every answer carries its request's id, and every log line too."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from app.server.logs import MAX_REQUEST_ID_CHARS, accepted_request_id
from bench.processes import running_service, service_env
from tests.app.helpers import running_app
from tests.conftest import TINY_MODEL


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123", True),
        ("trace.7:span_9", True),
        ("x" * MAX_REQUEST_ID_CHARS, True),
        ("x" * (MAX_REQUEST_ID_CHARS + 1), False),
        ("has space", False),
        ("line\nbreak", False),
        ("", False),
        (None, False),
    ],
)
def test_a_plain_short_request_id_is_kept_and_anything_else_replaced(given: str | None, kept: bool) -> None:
    accepted = accepted_request_id(given)

    assert (accepted == given) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", accepted)


def test_every_answer_echoes_its_request_id(tiny_store: Path) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with running_app(tiny_store) as client:
            given = await client.post(
                "/generate", params={"n": 1, "seed": 1}, headers={"X-Request-ID": "req-1"}
            )
            made = await client.get("/healthz")
            refused = await client.post("/generate", params={"n": 0}, headers={"X-Request-ID": "bad id"})
            return given, made, refused

    given, made, refused = asyncio.run(scenario())

    assert given.status_code == 200 and given.headers["x-request-id"] == "req-1"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert refused.status_code == 422 and re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])


def _served_log(store: Path, log: Path, log_format: str) -> str:
    env = service_env(store, log_format=log_format, default_model=TINY_MODEL)
    with running_service(env, log) as (_, base_url):
        response = httpx.post(
            f"{base_url}/generate", params={"n": 2, "seed": 3}, headers={"X-Request-ID": "test-42"}
        )
        assert response.status_code == 200
    return log.read_text()


def test_json_logs_are_one_object_per_line_with_an_access_line_per_request(
    tiny_store: Path, tmp_path: Path
) -> None:
    text = _served_log(tiny_store, tmp_path / "server.log", "json")
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    assert len(lines) == len(text.splitlines()), text[-2000:]  # nothing but JSON objects
    assert any(line["message"] == "Application startup complete." for line in lines)
    [access] = [
        line for line in lines if line["logger"] == "genserve.access" and line["request_id"] == "test-42"
    ]
    assert (access["method"], access["path"], access["status"], access["level"]) == (
        "POST",
        "/generate",
        200,
        "info",
    )
    assert access["duration_ms"] > 0 and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", access["time"]
    )


def test_text_logs_name_the_request_on_its_access_line(tiny_store: Path, tmp_path: Path) -> None:
    text = _served_log(tiny_store, tmp_path / "server.log", "text")

    assert re.search(
        r" INFO genserve\.access \[test-42\]: POST /generate 200 [\d.]+ ms$", text, re.MULTILINE
    ), text[-2000:]
