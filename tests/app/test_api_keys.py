"""API keys on the inference surface: who may call, named in logs and metrics, rotated without a restart."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import grpc
import httpx
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from app.server.api_keys import MISSING_KEY, UNKNOWN_KEY, parse_keys
from tests.app.helpers import make_settings, running_app
from tests.app.protocol_helpers import serving
from tests.conftest import TINY_MODEL

TEAM_A = "a" * 24
TEAM_B = "b" * 24


def keys_file(folder: Path, text: str) -> Path:
    path = folder / "keys.txt"
    path.write_text(text)
    return path


def test_a_keys_file_names_each_key_and_refuses_bad_lines() -> None:
    keys = parse_keys(f"# teams\nteam-a: {TEAM_A}\n\nteam_b : {TEAM_B}\n")

    assert sorted(keys.values()) == ["team-a", "team_b"]
    assert TEAM_A.encode() not in b"".join(keys)  # digests, never the keys
    for bad, problem in [
        ("team-a", "line 1: expected 'name: key'"),
        ("team a: " + TEAM_A, "line 1: expected 'name: key'"),
        ("team-a: short", "line 1: the key of 'team-a' needs 16"),
        (f"team-a: {TEAM_A}\nteam-b: {TEAM_A}", "line 2: 'team-b' has the key of 'team-a'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            parse_keys(bad)


def test_a_bad_keys_file_stops_start_up(tiny_store: Path, tmp_path: Path) -> None:
    from app.main import create_app

    with pytest.raises(ValueError, match="line 1"):
        create_app(make_settings(tiny_store, api_keys_file=keys_file(tmp_path, "team-a: short\n")))


def test_requests_need_a_known_key_and_probes_stay_open(tiny_store: Path, tmp_path: Path) -> None:
    path = keys_file(tmp_path, f"team-a: {TEAM_A}\n")

    async def scenario() -> dict[str, httpx.Response]:
        async with running_app(tiny_store, api_keys_file=path) as client:
            generate = "/generate?n=1&seed=1"
            return {
                "none": await client.post(generate),
                "bearer": await client.post(generate, headers={"Authorization": f"Bearer {TEAM_A}"}),
                "header": await client.post(generate, headers={"X-API-Key": TEAM_A}),
                "wrong": await client.post(generate, headers={"Authorization": f"Bearer {TEAM_B}"}),
                "v2": await client.get(f"/v2/models/{TINY_MODEL}"),
                "healthz": await client.get("/healthz"),
                "readyz": await client.get("/readyz"),
                "metrics": await client.get("/metrics"),
            }

    answers = asyncio.run(scenario())

    assert answers["none"].status_code == 401 and answers["none"].headers["www-authenticate"] == "Bearer"
    assert answers["none"].json()["error"] == {"code": "unauthorized", "message": MISSING_KEY}
    assert answers["bearer"].status_code == 200 and answers["header"].status_code == 200
    assert answers["wrong"].status_code == 401 and answers["wrong"].json()["error"]["message"] == UNKNOWN_KEY
    assert answers["v2"].status_code == 401 and answers["v2"].json() == {"error": MISSING_KEY}
    assert [answers[name].status_code for name in ("healthz", "readyz", "metrics")] == [200, 200, 200]
    metrics = answers["metrics"].text
    assert 'genserve_api_key_requests_total{key="team-a"} 2.0' in metrics
    assert 'genserve_api_key_refusals_total{reason="missing"} 2.0' in metrics
    assert 'genserve_api_key_refusals_total{reason="unknown"} 1.0' in metrics
    assert TEAM_A not in metrics


def test_keys_rotate_without_a_restart(tiny_store: Path, tmp_path: Path) -> None:
    path = keys_file(tmp_path, f"team-a: {TEAM_A}\n")

    async def scenario() -> list[int]:
        async with running_app(tiny_store, api_keys_file=path) as client:
            statuses = [(await client.get("/models", headers={"X-API-Key": TEAM_A})).status_code]
            path.write_text(f"team-b: {TEAM_B}\n")
            os.utime(path, ns=(1, 1))  # a new stamp, whatever the clock's resolution
            await asyncio.sleep(1.1)  # the file is looked at again at most once a second
            for key in (TEAM_A, TEAM_B):
                statuses.append((await client.get("/models", headers={"X-API-Key": key})).status_code)
            return statuses

    assert asyncio.run(scenario()) == [200, 401, 200]


def test_grpc_calls_need_a_known_key_in_their_metadata(tiny_store: Path, tmp_path: Path) -> None:
    path = keys_file(tmp_path, f"team-a: {TEAM_A}\n")
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TINY_MODEL
    with serving(tiny_store, http_headers={"X-API-Key": TEAM_A}, api_keys_file=path) as served:
        with pytest.raises(grpc.RpcError) as refused:
            served.models.GetModelStatus(request, timeout=30)
        answer = served.models.GetModelStatus(
            request, timeout=30, metadata=[("authorization", f"Bearer {TEAM_A}")]
        )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED and refused.value.details() == MISSING_KEY
    assert answer.model_version_status[0].state == 30  # AVAILABLE
