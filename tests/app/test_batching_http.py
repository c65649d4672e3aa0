"""Batching seen through HTTP: shared model calls, overload 503, deadline 504, disconnects."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.requests import Request

from app.server.disconnect import cancel_on_disconnect
from app.server.errors import ClientDisconnected
from tests.app.helpers import HeldModel, decode_npy, max_abs_diff, running_app


async def batching_stats(client: httpx.AsyncClient) -> dict[str, int]:
    stats: dict[str, int] = (await client.get("/models")).json()["models"][0]["versions"][0]["batching"]
    return stats


def test_concurrent_requests_share_model_calls_and_keep_their_pixels(tiny_store: Path) -> None:
    async def scenario() -> None:
        async with running_app(tiny_store, max_batch_size=32, max_delay_ms=100) as client:
            before = await batching_stats(client)
            responses = await asyncio.gather(
                *(
                    client.post("/generate", params={"n": 1, "seed": 1000 + i, "format": "npy"})
                    for i in range(16)
                )
            )
            after = await batching_stats(client)
            assert all(r.status_code == 200 for r in responses)
            calls = after["model_calls"] - before["model_calls"]
            assert after["images"] - before["images"] == 16
            assert calls < 16
            alone = await client.post("/generate", params={"n": 16, "seed": 1000, "format": "npy"})
            together = np.concatenate([decode_npy(r.content) for r in responses])
            assert max_abs_diff(together, decode_npy(alone.content)) <= 1

    asyncio.run(scenario())


def test_full_queue_answers_503_with_retry_after(tiny_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = HeldModel(monkeypatch)

    async def scenario() -> None:
        # One model call at a time, so the second request waits in the queue instead of in a second call.
        async with running_app(
            tiny_store, max_batch_size=4, max_queue_images=4, max_delay_ms=0, max_concurrent_batches=1
        ) as client:
            held.armed = True
            busy = asyncio.create_task(client.post("/generate", params={"n": 4, "seed": 1}))
            await held.wait_started()
            queued = asyncio.create_task(client.post("/generate", params={"n": 4, "seed": 5}))
            await asyncio.sleep(0.2)
            rejected = await client.post("/generate", params={"n": 1, "seed": 9})
            assert rejected.status_code == 503
            assert int(rejected.headers["retry-after"]) >= 1
            assert rejected.json()["error"]["code"] == "overloaded"
            metrics = (await client.get("/metrics")).text
            assert (
                'genserve_rejections_total{model="shapes-dcgan",reason="overload",version="1"} 1.0' in metrics
            )
            held.armed = False
            held.release.set()
            assert (await busy).status_code == 200
            assert (await queued).status_code == 200

    asyncio.run(scenario())


def test_request_past_its_deadline_gets_504(tiny_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = HeldModel(monkeypatch)

    async def scenario() -> None:
        async with running_app(tiny_store, max_batch_size=4, request_timeout_s=0.5, max_delay_ms=0) as client:
            held.armed = True
            first = asyncio.create_task(client.post("/generate", params={"n": 4, "seed": 1}))
            await held.wait_started()
            second = await client.post("/generate", params={"n": 2, "seed": 5})
            assert second.status_code == 504
            assert second.json()["error"]["code"] == "deadline_exceeded"
            metrics = (await client.get("/metrics")).text
            assert 'genserve_rejections_total{model="shapes-dcgan",reason="deadline",version="1"}' in metrics
            assert (await first).status_code == 504
            held.armed = False
            held.release.set()
            await asyncio.sleep(0.1)
            assert (await client.post("/generate", params={"n": 1, "seed": 3})).status_code == 200

    asyncio.run(scenario())


def test_disconnect_cancels_the_pending_work() -> None:
    async def scenario() -> None:
        messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": b"", "more_body": False},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0.05)
            return messages.pop(0)

        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
        work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with pytest.raises(ClientDisconnected):
            await cancel_on_disconnect(request, work)
        assert work.cancelled()

    asyncio.run(scenario())


def test_finished_work_wins_over_a_later_disconnect() -> None:
    async def scenario() -> None:
        async def receive() -> dict[str, Any]:
            await asyncio.sleep(10)
            return {"type": "http.disconnect"}

        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)

        async def work() -> int:
            return 7

        assert await cancel_on_disconnect(request, work()) == 7

    asyncio.run(scenario())
