"""Hot reload: new versions, failed loads, a vanished store, version pinning and labels — on a live app."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from genserve import store
from tests.app.helpers import running_app
from tests.conftest import TINY_MODEL

V1 = {"n": 1, "seed": 1}


def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def publish_copy(root: Path, corrupt: bool = False) -> Path:
    """Publish version 1's files again as the next version (optionally with a broken graph)."""
    source = store.version_dir(root, TINY_MODEL, 1)

    def write(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        for name in (store.COMPLETE_MARKER, store.METADATA_FILE, store.EVALUATION_FILE):
            (folder / name).unlink(missing_ok=True)
        if corrupt:
            (folder / "saved_model.pb").write_bytes(b"broken")

    return store.publish_version(root, store.read_metadata(source), write)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def versions(client: httpx.AsyncClient) -> dict[int, str]:
    body = (await client.get(f"/models/{TINY_MODEL}")).json()
    return {v["version"]: v["status"] for v in body["versions"]}


def test_new_version_is_served_without_failing_requests(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0.2) as client:
            seen: list[tuple[int, str | None]] = []
            stop = asyncio.Event()

            async def hammer() -> None:
                while not stop.is_set():
                    response = await client.post("/generate", params=V1)
                    seen.append((response.status_code, response.headers.get("x-model-version")))

            workers = [asyncio.create_task(hammer()) for _ in range(4)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(publish_copy, root)
            await eventually(lambda: asyncio.sleep(0, result=any(v == "2" for _, v in seen)))
            await eventually(lambda: _equals(versions(client), {2: "available"}))
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*workers)
            assert {status for status, _ in seen} == {200}
            assert seen[-1][1] == "2"
            assert {v for _, v in seen} == {"1", "2"}

    asyncio.run(scenario())


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


def test_corrupt_version_never_replaces_the_serving_one(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0.1, load_retry_initial_s=0.1) as client:
            await asyncio.to_thread(publish_copy, root, True)
            await eventually(lambda: _equals(versions(client), {1: "available", 2: "failed"}))
            detail = (await client.get(f"/models/{TINY_MODEL}")).json()["versions"][1]
            assert "cannot be loaded" in detail["error"]
            response = await client.post("/generate", params=V1)
            assert response.status_code == 200 and response.headers["x-model-version"] == "1"

            async def retried() -> bool:
                text = (await client.get("/metrics")).text
                line = next(
                    x for x in text.splitlines() if x.startswith("genserve_model_load_failures_total{")
                )
                return float(line.split()[-1]) >= 2

            await eventually(retried)

    asyncio.run(scenario())


def test_removed_store_keeps_serving(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0.1) as client:
            shutil.rmtree(root)

            async def scan_failed() -> bool:
                return 'genserve_store_scans_total{result="error"}' in (await client.get("/metrics")).text

            await eventually(scan_failed)
            await asyncio.sleep(0.3)
            response = await client.post("/generate", params=V1)
            assert response.status_code == 200
            assert await versions(client) == {1: "available"}
            assert (await client.get("/readyz")).status_code == 200

    asyncio.run(scenario())


def test_pinned_versions_and_labels(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    publish_copy(root)
    store.write_labels(root, TINY_MODEL, {"stable": 1, "canary": 2})

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0) as client:
            await eventually(lambda: _equals(versions(client), {1: "available", 2: "available"}))

            async def served(version: str) -> str:
                response = await client.post("/generate", params={**V1, "version": version})
                assert response.status_code == 200, response.text
                return response.headers["x-model-version"]

            assert await served("1") == "1"
            assert await served("2") == "2"
            assert await served("latest") == "2"
            assert await served("stable") == "1"
            assert await served("canary") == "2"
            response = await client.post("/generate", params={**V1, "version": "beta"})
            assert response.status_code == 404
            assert "canary" in response.json()["error"]["message"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("policy", "expected"), [("latest", {2: "available"}), ("all", {1: "available", 2: "available"})]
)
def test_version_policy_decides_what_is_loaded(
    tiny_store: Path, tmp_path: Path, policy: str, expected: dict[int, str]
) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    publish_copy(root)

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0, version_policy=policy) as client:
            await eventually(lambda: _equals(versions(client), expected))

    asyncio.run(scenario())
