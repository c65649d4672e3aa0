"""How many requests the service is working on right now, over HTTP and gRPC.

The metrics middleware and the gRPC call wrapper count requests in and out; `/metrics` shows the count, and the
batchers ask `alone()` before running a small model call on the event loop's own thread (see
`BatchingConfig.inline_lone_calls`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class RequestsInFlight:
    """A count of requests being served; only the event loop's thread changes or reads it."""

    def __init__(self) -> None:
        self.count = 0

    def alone(self) -> bool:
        """Whether at most one request is being served: the caller's own."""
        return self.count <= 1

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count one request for the duration of the block."""
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
