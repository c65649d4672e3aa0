"""HTTP connections with read deadlines, so idle or trickling clients cannot hold file descriptors forever.

uvicorn closes a keep-alive connection that stays idle after a response, but not one that connects and sends
nothing, stops halfway through its headers, or never finishes its body. This protocol adds those three
deadlines: the first request must start within the keep-alive time, the headers must be complete within
`header_timeout_s` of their first byte, and the body within `body_timeout_s` of the end of the headers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for the first byte, the headers and the body."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeouts(cls, header_timeout_s: float, body_timeout_s: float) -> type[DeadlineHttpToolsProtocol]:
        """A subclass with these deadlines (uvicorn builds protocols from a class, not an instance)."""
        return type(
            cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s}
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A client that connects and says nothing is treated like an idle keep-alive connection.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._close_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_read_deadline()
        super().connection_lost(exc)

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
