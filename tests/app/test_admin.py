"""The admin API: off without a token, bearer-token protected with one."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.app.helpers import running_app
from tests.app.test_store_watcher import publish_copy, versions
from tests.conftest import TINY_MODEL

TOKEN = "s3cret-token"
RELOAD = f"/admin/models/{TINY_MODEL}/reload"


def test_admin_api_does_not_exist_without_a_token(tiny_store: Path) -> None:
    async def scenario() -> None:
        async with running_app(tiny_store) as client:
            response = await client.post(RELOAD, headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"

    asyncio.run(scenario())


def test_admin_rejects_missing_and_wrong_tokens(tiny_store: Path) -> None:
    async def scenario() -> None:
        async with running_app(tiny_store, admin_token=TOKEN) as client:
            missing = await client.post(RELOAD)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await client.post(RELOAD, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403
            assert wrong.json()["error"]["code"] == "forbidden"
            basic = await client.post(RELOAD, headers={"Authorization": f"Basic {TOKEN}"})
            assert basic.status_code == 401

    asyncio.run(scenario())


def test_admin_reload_and_unload(tiny_store: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario() -> None:
        async with running_app(root, admin_token=TOKEN, poll_interval_s=0, version_policy="all") as client:
            publish_copy(root)
            reloaded = await client.post(RELOAD, headers=auth)
            assert reloaded.status_code == 200
            assert [v["status"] for v in reloaded.json()["versions"]] == ["available", "available"]

            unloaded = await client.post(f"/admin/models/{TINY_MODEL}/versions/2/unload", headers=auth)
            assert unloaded.status_code == 200
            assert await versions(client) == {1: "available"}
            pinned = await client.post("/generate", params={"n": 1, "version": 2})
            assert pinned.status_code == 404
            missing = await client.post(f"/admin/models/{TINY_MODEL}/versions/9/unload", headers=auth)
            assert missing.status_code == 404
            unknown = await client.post("/admin/models/ghost/reload", headers=auth)
            assert unknown.status_code == 404

            assert (await client.post(RELOAD, headers=auth)).status_code == 200
            assert await versions(client) == {1: "available", 2: "available"}

    asyncio.run(scenario())
