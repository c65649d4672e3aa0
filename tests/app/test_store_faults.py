"""Store entries that name nothing, failed versions, named pipes in versions and admin settings: none can wedge
the service (its loads, reloads or exit) or leak paths."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from bench.processes import free_port, service_env, start, wait_until_ready
from genserve import store
from tests.app.helpers import running_app
from tests.app.test_store_watcher import copy_store, eventually, publish_copy, versions
from tests.conftest import TINY_MODEL

ODD_FOLDERS = ["a" * 100, f"{TINY_MODEL}/²", f"{TINY_MODEL}/٣", f"{TINY_MODEL}/007"]


async def skipped_count(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("genserve_store_entries_skipped_total "))
    return float(line.split()[-1])


def test_odd_folders_at_start_up_are_skipped_logged_and_counted(
    tiny_store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    for folder in ODD_FOLDERS:
        (root / folder).mkdir()

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0.1, admin_token="t0ken") as client:
            assert (await client.post("/generate", params={"n": 1, "seed": 1})).status_code == 200
            assert await skipped_count(client) == len(ODD_FOLDERS)
            await asyncio.sleep(0.3)  # several more scans: each folder is still counted once
            assert await skipped_count(client) == len(ODD_FOLDERS)
            await asyncio.to_thread(publish_copy, root)
            await eventually(lambda: _has_version(client, 2))
            reload = await client.post(
                f"/admin/models/{TINY_MODEL}/reload", headers={"Authorization": "Bearer t0ken"}
            )
            assert reload.status_code == 200, reload.text

    asyncio.run(scenario())
    logged = [record.getMessage() for record in caplog.records if "skipping" in record.getMessage()]
    assert len(logged) == len(ODD_FOLDERS)
    assert any("\\xb2" in message for message in logged)  # non-ASCII names are shown escaped


async def _has_version(client: httpx.AsyncClient, version: int) -> bool:
    return (await versions(client)).get(version) == "available"


def test_a_scan_that_raises_still_ends_discovery(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    real_scan = store.scan_store
    calls = 0

    def failing_once(path: Path) -> store.StoreScan:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("unexpected")
        return real_scan(path)

    monkeypatch.setattr(store, "scan_store", failing_once)

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0.1) as client:
            response = await client.post("/generate", params={"n": 1})
            assert response.status_code == 200

    asyncio.run(scenario())
    assert calls >= 2


def test_failed_version_errors_name_no_absolute_path(tiny_store: Path, tmp_path: Path) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    shutil.rmtree(root / TINY_MODEL / "1")
    broken = publish_copy(copy_store(tiny_store, tmp_path / "source"), corrupt=True)
    shutil.copytree(broken, root / TINY_MODEL / "1")

    async def scenario() -> None:
        app_settings = {"poll_interval_s": 0.1, "load_retry_initial_s": 30.0}
        async with running_app(root, wait_ready=False, **app_settings) as client:
            await eventually(lambda: _status_is(client, "failed"))
            listing = (await client.get("/models")).text
            response = await client.post("/generate", params={"n": 1})
        assert str(tmp_path) not in listing and "/tmp" not in listing
        assert f"{TINY_MODEL}/1" in listing
        assert response.status_code == 503
        assert "retry-after" in response.headers
        assert str(tmp_path) not in response.text and "/tmp" not in response.text

    asyncio.run(scenario())


async def _status_is(client: httpx.AsyncClient, status: str) -> bool:
    response = await client.get(f"/models/{TINY_MODEL}")
    return response.status_code == 200 and response.json()["versions"][0]["status"] == status


@pytest.mark.parametrize("token", ["", "   "])
def test_empty_admin_token_leaves_the_admin_api_off(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSERVE_ADMIN_TOKEN", token)
    assert Settings().admin_token is None


def publish_with_pipe(root: Path, file: str, name: str = TINY_MODEL) -> Path:
    """Version 1's files published as the next version of `name`, with `file` (relative) a named pipe."""
    source = store.version_dir(root, TINY_MODEL, 1)
    staging = root / name / f"{store.TEMP_PREFIX}pipe"
    shutil.copytree(source, staging)
    (staging / store.COMPLETE_MARKER).unlink()
    (staging / file).unlink(missing_ok=True)
    os.mkfifo(staging / file)
    target = store.version_dir(root, name, store.next_version(root, name))
    staging.rename(target)
    (target / store.COMPLETE_MARKER).write_text(store.utc_now() + "\n")
    return target


def add_model(root: Path, name: str) -> None:
    """Another model, published under `name` from the tiny model's version 1."""
    staging = root / f"{store.TEMP_PREFIX}{name}"
    shutil.copytree(store.version_dir(root, TINY_MODEL, 1), staging / "1")
    staging.rename(root / name)


async def version_status(client: httpx.AsyncClient, name: str, version: int) -> dict[str, Any] | None:
    response = await client.get(f"/models/{name}")
    if response.status_code != 200:
        return None
    return next((v for v in response.json()["versions"] if v["version"] == version), None)


async def has_status(client: httpx.AsyncClient, name: str, version: int, status: str) -> bool:
    found = await version_status(client, name, version)
    return found is not None and found["status"] == status


@pytest.mark.parametrize("file", ["saved_model.pb", "variables/variables.index", store.METADATA_FILE])
def test_a_version_holding_a_named_pipe_fails_and_nothing_waits_on_it(
    tiny_store: Path, tmp_path: Path, file: str
) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    auth = {"Authorization": "Bearer t0ken"}

    async def scenario() -> None:
        async with running_app(
            root, poll_interval_s=0.1, load_retry_initial_s=30.0, admin_token="t0ken"
        ) as client:
            await asyncio.to_thread(publish_with_pipe, root, file)
            await eventually(lambda: has_status(client, TINY_MODEL, 2, "failed"))
            failed = await version_status(client, TINY_MODEL, 2)
            assert failed is not None
            assert failed["error"] == f"{TINY_MODEL}/2/{file} is a named pipe (FIFO), not a regular file" + (
                "" if file == store.METADATA_FILE else " or folder"
            )
            served = await client.post("/generate", params={"n": 1, "seed": 1})
            assert served.status_code == 200 and served.headers["x-model-version"] == "1"

            await asyncio.to_thread(add_model, root, "other-dcgan")
            await eventually(lambda: has_status(client, "other-dcgan", 1, "available"))
            reload = await client.post(f"/admin/models/{TINY_MODEL}/reload", headers=auth)
            assert reload.status_code == 200, reload.text
            statuses = {v["version"]: v["status"] for v in reload.json()["versions"]}
            assert statuses == {1: "available", 2: "failed"}
            assert str(tmp_path) not in reload.text

    asyncio.run(scenario())


def test_an_evaluation_that_is_a_named_pipe_is_left_out_and_the_version_serves(
    tiny_store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = copy_store(tiny_store, tmp_path / "store")

    async def scenario() -> None:
        async with running_app(root, poll_interval_s=0.1) as client:
            await asyncio.to_thread(publish_with_pipe, root, store.EVALUATION_FILE)
            await eventually(lambda: has_status(client, TINY_MODEL, 2, "available"))
            loaded = await version_status(client, TINY_MODEL, 2)
            assert loaded is not None and loaded["evaluation"] is None and loaded["error"] is None
            served = await client.post("/generate", params={"n": 1, "seed": 1})
            assert served.status_code == 200 and served.headers["x-model-version"] == "2"

    asyncio.run(scenario())
    assert any(
        "ignoring an unreadable record" in record.getMessage() and "named pipe" in record.getMessage()
        for record in caplog.records
    )


def skip_version_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a named pipe reach TensorFlow's loader, as one swapped in after the version folder was checked."""
    monkeypatch.setattr(store, "check_saved_model_files", lambda folder: None)


def load_threads(name: str, version: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"genserve-load-{name}-{version}" and t.is_alive()]


def release_readers(pipe: Path, name: str, version: int, timeout_s: float = 30.0) -> None:
    """Open the pipe's writing end until no load of the version waits on it any more (each read then ends)."""
    deadline = time.monotonic() + timeout_s
    while load_threads(name, version):
        assert time.monotonic() < deadline, "a load still waits on the pipe"
        with contextlib.suppress(OSError):  # no reader at this moment
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        time.sleep(0.05)


def test_a_load_past_its_deadline_fails_and_later_loads_and_reloads_go_ahead(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    skip_version_check(monkeypatch)
    auth = {"Authorization": "Bearer t0ken"}
    pipe = store.version_dir(root, TINY_MODEL, 2) / "saved_model.pb"

    async def scenario() -> None:
        async with running_app(
            root, poll_interval_s=0.1, load_retry_initial_s=30.0, load_timeout_s=2.0, admin_token="t0ken"
        ) as client:
            await asyncio.to_thread(publish_with_pipe, root, "saved_model.pb")
            await eventually(lambda: has_status(client, TINY_MODEL, 2, "failed"))
            failed = await version_status(client, TINY_MODEL, 2)
            assert failed is not None and failed["error"] == "loading took longer than its deadline of 2 s"

            await asyncio.to_thread(add_model, root, "other-dcgan")
            await eventually(lambda: has_status(client, "other-dcgan", 1, "available"))
            reload = await client.post(f"/admin/models/{TINY_MODEL}/reload", headers=auth)
            assert reload.status_code == 200, reload.text
            retried = {v["version"]: v["error"] for v in reload.json()["versions"]}
            assert retried[2] == "its previous load, given up after 2 s, has not returned yet"
            served = await client.post("/generate", params={"n": 1, "seed": 1})
            assert served.status_code == 200 and served.headers["x-model-version"] == "1"

            # Retries while it waits start no other thread, and it cannot keep the process alive at exit.
            [stuck] = load_threads(TINY_MODEL, 2)
            assert stuck.daemon

    try:
        asyncio.run(scenario())
    finally:
        release_readers(pipe, TINY_MODEL, 2)


PIPE_AFTER_CHECK_SERVER = """
from genserve import store
from app.__main__ import main

# A named pipe swapped in after the version folder was checked: TensorFlow's open() of it waits for a writer.
store.check_saved_model_files = lambda folder: None
main()
"""


@pytest.mark.parametrize("after_check", [False, True], ids=["refused", "past_the_check"])
def test_the_server_exits_on_sigterm_whatever_pipes_the_store_holds(
    tiny_store: Path, tmp_path: Path, after_check: bool
) -> None:
    root = copy_store(tiny_store, tmp_path / "store")
    port = free_port()
    env = service_env(root, port, poll_interval_s=0.2, load_timeout_s=2, load_retry_initial_s=0.2)
    log = tmp_path / "server.log"
    command = ["-c", PIPE_AFTER_CHECK_SERVER] if after_check else ["-m", "app"]
    process = start([sys.executable, *command], log, env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base_url}/readyz", process, log, 90)
        publish_with_pipe(root, "saved_model.pb")
        add_model(root, "piped-metadata")
        publish_with_pipe(root, store.METADATA_FILE, name="piped-metadata")
        wait_for_failed(base_url, [(TINY_MODEL, 2), ("piped-metadata", 2)])
        served = httpx.post(f"{base_url}/generate", params={"model": TINY_MODEL, "n": 1}, timeout=30)
        assert served.status_code == 200 and served.headers["x-model-version"] == "1"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Finished server process" in log.read_text()


def wait_for_failed(base_url: str, expected: list[tuple[str, int]], timeout_s: float = 60.0) -> None:
    """Until each (model, version) of `expected` is listed as failed by the server at `base_url`."""
    deadline = time.monotonic() + timeout_s
    while True:
        listing = httpx.get(f"{base_url}/models", timeout=10).json()["models"]
        statuses = {(m["name"], v["version"]): v["status"] for m in listing for v in m["versions"]}
        if all(statuses.get(version) == "failed" for version in expected):
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)
