"""Dropping a request's queued work when its client disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from app.server.errors import ClientDisconnected

T = TypeVar("T")


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been read by now, so the next ASGI message can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request | None, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (so the batcher drops it) if the client disconnects first.

    The work runs in the caller's task, and a watcher task cancels that task when the disconnect arrives: one
    task per request rather than two, since this sits on every request's path.
    """
    if request is None:
        return await work
    current = asyncio.current_task()
    if current is None:
        raise RuntimeError("cancel_on_disconnect must run inside a task")
    disconnected = False

    def cancel_work(watcher: asyncio.Task[None]) -> None:
        nonlocal disconnected
        if not watcher.cancelled() and watcher.exception() is None:
            disconnected = True
            current.cancel()

    watcher = asyncio.create_task(_wait_for_disconnect(request))
    watcher.add_done_callback(cancel_work)
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise
        current.uncancel()
        raise ClientDisconnected("client disconnected before the images were ready") from None
    finally:
        watcher.remove_done_callback(cancel_work)
        watcher.cancel()
