"""The connection budget: how many client connections the process holds, and for how long.

Every connection takes a file descriptor and some memory, so a client that opens thousands, or holds them
without making progress, must not starve the others or the store watcher. The process raises its descriptor
limit to the hard limit at start-up and keeps a reserve of descriptors for loading models, logging and the
store watcher; the rest, up to `MAX_DEFAULT_CONNECTIONS`, is shared between the HTTP and gRPC listeners
(`connection_budget`). One client address may hold at most half of the HTTP budget by default, so a client
that opens connections without end leaves the rest to everyone else. Past either limit a new HTTP connection
is answered 503 with `Retry-After` at once and closed; gRPC refuses it at accept.

uvicorn closes a keep-alive connection that stays idle after a response, but not one that connects and sends
nothing, stops halfway through its headers, never finishes its body, or stops reading its answer. This protocol
adds those deadlines: the first request must start within the keep-alive time, the headers must be complete
within `header_timeout_s` of their first byte, the body within `body_timeout_s` of the end of the headers, and a
client whose unread answer fills the socket's buffers must read some of it within `write_timeout_s` (a stream
whose client stopped reading is dropped, and its work with it).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.server.memory import release_free_memory

logger = logging.getLogger(__name__)

# Descriptors kept back from client connections: model loads (a SavedModel's files), the store watcher, logs,
# the gRPC server's own, and headroom.
DESCRIPTOR_RESERVE = 256
# The default budget's ceiling whatever the descriptor limit: each connection also costs memory (tens of KB).
MAX_DEFAULT_CONNECTIONS = 8192
_MIN_CONNECTIONS = 16
# Retry-After of a connection refused for the budget: connections come and go within seconds.
_REFUSED_RETRY_AFTER_S = 1
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: %d\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
# Connections open at once that make a burst worth handing memory back after.
_BURST_CONNECTIONS = 512
_IDLE_CONNECTIONS = 16
_TRIM_INTERVAL_S = 1.0
_REFUSED_BODY = b'{"error":{"code":"overloaded","message":"too many open connections; retry shortly"}}'


def raise_descriptor_limit() -> int:
    """Raise this process's open-file limit to its hard limit (where the system allows); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            logger.warning("could not raise the open-file limit from %d to %d", soft, hard)
    return soft


def connection_budget(configured: int | None, listeners: int) -> int:
    """Client connections each listener may hold: `configured` (GENSERVE_MAX_CONNECTIONS) if set, else the
    descriptors left after the reserve, shared between `listeners` (HTTP, and gRPC when on)."""
    if configured is not None:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    available = soft - DESCRIPTOR_RESERVE if soft != resource.RLIM_INFINITY else MAX_DEFAULT_CONNECTIONS
    return max(_MIN_CONNECTIONS, min(MAX_DEFAULT_CONNECTIONS, available // max(1, listeners)))


@dataclass
class _Census:
    """Open connections by client address, the most open since memory was last handed back, and whether a hand-back
    is scheduled."""

    by_client: collections.Counter[str] = field(default_factory=collections.Counter)
    burst: int = 0
    trim_pending: bool = False


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection budget, and deadlines for the first byte, the headers,
    the body and the client's reading of the answer."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0
    write_timeout_s = 30.0
    max_connections: int | None = None
    max_per_client: int | None = None
    on_refused: Callable[[], None] = staticmethod(lambda: None)
    # What every connection of the server shares (a new one for each `configured` class).
    _census: _Census = _Census()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._address = ""

    @classmethod
    def configured(
        cls,
        *,
        header_timeout_s: float,
        body_timeout_s: float,
        write_timeout_s: float,
        max_connections: int | None = None,
        max_per_client: int | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> type[DeadlineHttpToolsProtocol]:
        """A subclass with these limits (uvicorn builds protocols from a class, not an instance)."""
        limits: dict[str, Any] = {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "write_timeout_s": write_timeout_s,
            "max_connections": max_connections,
            "max_per_client": max_per_client,
            "_census": _Census(),
        }
        if on_refused is not None:
            limits["on_refused"] = staticmethod(on_refused)
        return type(cls.__name__, (cls,), limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        self._census.by_client[self._address] += 1
        self._census.burst = max(self._census.burst, len(self.connections))
        if (self.max_connections is not None and len(self.connections) > self.max_connections) or (
            self.max_per_client is not None and self._census.by_client[self._address] > self.max_per_client
        ):
            self._refuse()
            return
        # A client that connects and says nothing is treated like an idle keep-alive connection.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._close_idle)

    def _refuse(self) -> None:
        """Answer 503 before reading anything, and close: the connection is over the budget."""
        self.on_refused()
        self.transport.write(_REFUSED % (_REFUSED_RETRY_AFTER_S, len(_REFUSED_BODY), _REFUSED_BODY))
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(self.write_timeout_s, self._drop_non_reader)

    def resume_writing(self) -> None:
        self._clear_write_deadline()
        super().resume_writing()

    def _clear_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _drop_non_reader(self) -> None:
        self._write_deadline = None
        if not self.transport.is_closing():
            logger.info("dropping a client that read none of its answer for %.0f s", self.write_timeout_s)
            # abort, not close: close would wait for the unread answer to be flushed first.
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_read_deadline()
        self._clear_write_deadline()
        self._census.by_client[self._address] -= 1
        if self._census.by_client[self._address] <= 0:
            del self._census.by_client[self._address]
        super().connection_lost(exc)
        if self._census.burst >= _BURST_CONNECTIONS and not self._census.trim_pending:
            # A burst of connections is going: hand the memory they took back to the system, once a second
            # while they close, until a pass finds the server nearly idle.
            self._census.trim_pending = True
            self.loop.call_later(_TRIM_INTERVAL_S, self._trim_after_burst)

    def _trim_after_burst(self) -> None:
        self._census.trim_pending = False
        # Requests cut off by their clients leave exceptions whose tracebacks hold their frames in cycles; once
        # the traffic that would trigger the collector has gone, they would wait for it indefinitely.
        gc.collect()
        release_free_memory()
        if len(self.connections) <= _IDLE_CONNECTIONS:
            self._census.burst = len(self.connections)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._set_read_deadline(self.header_timeout_s, "headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._set_read_deadline(self.body_timeout_s, "body")

    def on_message_complete(self) -> None:
        self._clear_read_deadline()
        super().on_message_complete()

    def _set_read_deadline(self, seconds: float, part: str) -> None:
        self._clear_read_deadline()
        self._read_deadline = self.loop.call_later(seconds, self._close_slow, part, seconds)

    def _clear_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _close_slow(self, part: str, seconds: float) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            logger.info("closing a connection whose request %s took longer than %.0f s", part, seconds)
            self.transport.close()

    def _close_idle(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
