import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from app.server.disconnect import cancel_on_disconnect
from app.server.errors import ClientDisconnected


class _Client:
    """An ASGI `receive` whose next message after the body is a disconnect, once `leave` is called."""

    def __init__(self) -> None:
        self._left = asyncio.Event()
        self.error: Exception | None = None

    def leave(self) -> None:
        self._left.set()

    async def receive(self) -> Message:
        await self._left.wait()
        if self.error is not None:
            raise self.error
        return {"type": "http.disconnect"}

    def request(self) -> Request:
        return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, self.receive)


def _pending_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()}


async def _images_after(
    seconds: float, started: asyncio.Event | None = None, cancelled: asyncio.Event | None = None
) -> str:
    """Stand-in work: "images" after `seconds`, noting when it starts and whether it was cancelled."""
    if started is not None:
        started.set()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if cancelled is not None:
            cancelled.set()
        raise
    return "images"


def test_the_result_comes_back_and_no_watcher_is_left_running() -> None:
    asyncio.run(_the_result_comes_back_and_no_watcher_is_left_running())


async def _the_result_comes_back_and_no_watcher_is_left_running() -> None:
    client = _Client()

    assert await cancel_on_disconnect(client.request(), _images_after(0.01)) == "images"
    await asyncio.sleep(0)
    assert not _pending_tasks()


def test_a_disconnect_cancels_the_work_and_leaves_the_task_usable() -> None:
    asyncio.run(_a_disconnect_cancels_the_work_and_leaves_the_task_usable())


async def _a_disconnect_cancels_the_work_and_leaves_the_task_usable() -> None:
    client = _Client()
    work_cancelled = asyncio.Event()

    asyncio.get_running_loop().call_later(0.01, client.leave)
    with pytest.raises(ClientDisconnected):
        await cancel_on_disconnect(client.request(), _images_after(10, cancelled=work_cancelled))

    assert work_cancelled.is_set()
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0.001)  # the task goes on: no cancellation is left pending on it


def test_cancelling_the_caller_is_not_reported_as_a_disconnect() -> None:
    asyncio.run(_cancelling_the_caller_is_not_reported_as_a_disconnect())


async def _cancelling_the_caller_is_not_reported_as_a_disconnect() -> None:
    client = _Client()
    started = asyncio.Event()

    caller = asyncio.create_task(cancel_on_disconnect(client.request(), _images_after(10, started=started)))
    await started.wait()
    caller.cancel()

    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert not _pending_tasks()


def test_a_failing_receive_does_not_cancel_the_work() -> None:
    asyncio.run(_a_failing_receive_does_not_cancel_the_work())


async def _a_failing_receive_does_not_cancel_the_work() -> None:
    client = _Client()
    client.error = RuntimeError("connection state is gone")
    client.leave()

    assert await cancel_on_disconnect(client.request(), _images_after(0.02)) == "images"
