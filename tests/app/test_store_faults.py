"""Store entries that name nothing, failed versions and admin settings: none can wedge the service or leak paths."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from app.config import Settings
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
    from genserve import store

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
