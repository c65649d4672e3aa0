"""Graceful shutdown: on SIGTERM stop taking work, let queued and in-flight work finish, then exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.registry import ModelRegistry

logger = logging.getLogger(__name__)

_POLL_S = 0.05


async def drain(registry: ModelRegistry, grace_s: float) -> bool:
    """Refuse new work and wait up to `grace_s` for queued and in-flight images; True if all finished."""
    registry.begin_draining()
    deadline = time.monotonic() + grace_s
    while registry.pending_images() > 0 and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
    pending = registry.pending_images()
    if pending:
        logger.warning("shutdown grace of %.1f s ran out with %d images pending", grace_s, pending)
    return pending == 0


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains the app before stopping; a second one forces exit."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None
        self._drain_requested = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded as a captured signal, so the process exits 0 after a clean drain.
        if self._drain_requested or self._loop is None:
            logger.warning("second %s: stopping now", signal.Signals(sig).name)
            self.force_exit = self._drain_requested
            self.should_exit = True
            return
        self._drain_requested = True
        logger.info("%s received: draining for up to %.1f s", signal.Signals(sig).name, self._grace_s)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._loop is not None:
            self._draining = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        started = time.monotonic()
        registry: ModelRegistry | None = getattr(self._app.state, "registry", None)
        if registry is not None:
            await drain(registry, self._grace_s)
        # Responses still being encoded or sent get what is left of the grace period.
        self.config.timeout_graceful_shutdown = max(1, round(self._grace_s - (time.monotonic() - started)))
        self.should_exit = True
