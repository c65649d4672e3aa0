"""Graceful shutdown: on SIGTERM stop taking work, let queued and in-flight work finish, then exit 0.

Work still pending when the grace period ends is answered 503 and logged, and the process exits without
waiting for a model call in progress. A second SIGTERM/SIGINT exits at once (status 128 + signal number).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from types import FrameType
from typing import NoReturn

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.serving.registry import ModelRegistry

logger = logging.getLogger(__name__)

_POLL_S = 0.05
# Request-state key: whether the request arrived before draining began (and so must still be served).
_ADMITTED = "genserve_admitted"


class AdmissionMiddleware:
    """Stamps each request with whether it arrived before draining began.

    A request that arrived in time is served even if its generation starts after SIGTERM (an upload still
    being read, say); one that arrives later gets 503 from the generation service.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            registry: ModelRegistry | None = getattr(scope["app"].state, "registry", None)
            scope.setdefault("state", {})[_ADMITTED] = registry is not None and not registry.closing
        await self.app(scope, receive, send)


def admitted(request: Request | None) -> bool:
    """Whether `request` arrived before draining began."""
    return request is not None and bool(request.scope.get("state", {}).get(_ADMITTED))


async def drain(registry: ModelRegistry, grace_s: float) -> bool:
    """Refuse new work and wait up to `grace_s` for queued and in-flight images; True if all finished."""
    registry.begin_draining()
    deadline = time.monotonic() + grace_s
    while registry.pending_work() > 0 and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
    if registry.pending_work() == 0:
        return True
    await _drop_pending(registry, grace_s)
    return False


async def _drop_pending(registry: ModelRegistry, grace_s: float) -> None:
    """Answer the work still queued or running with 503 (shutting down), logging it per version."""
    for model_version in list(registry.versions()):
        servable = model_version.servable
        if servable is None or not servable.pending():
            continue
        logger.warning(
            "shutdown grace of %.1f s ran out: dropping %s of %s version %d",
            grace_s,
            servable.pending_description(),
            model_version.name,
            model_version.version,
        )
        await servable.stop(drain=False)


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains the app before stopping; a second one forces exit."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None
        self._drain_requested = False
        self._dropped_work = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        super().run(sockets)
        if self._dropped_work:
            # A model call cannot be interrupted, and Python would wait for its thread before exiting.
            _exit_now(0)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded as a captured signal, so the process exits 0 after a clean drain.
        if self._drain_requested:
            registry: ModelRegistry | None = getattr(self._app.state, "registry", None)
            pending = registry.pending_work() if registry is not None else 0
            logger.warning(
                "second %s: stopping now, dropping %d pending images", signal.Signals(sig).name, pending
            )
            _exit_now(128 + sig)
        if self._loop is None:  # still starting: there is nothing to drain yet
            logger.warning("%s during start-up: stopping", signal.Signals(sig).name)
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
            self._dropped_work = not await drain(registry, self._grace_s)
        # Responses still being encoded or sent get what is left of the grace period.
        self.config.timeout_graceful_shutdown = max(1, round(self._grace_s - (time.monotonic() - started)))
        self.should_exit = True


def _exit_now(status: int) -> NoReturn:
    """Leave the process at once, with the log written out: no waiting for threads still in a model call."""
    logging.shutdown()
    os._exit(status)
