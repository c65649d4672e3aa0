"""The service's logs: one line per event, as text or as JSON objects, each carrying its request's id.

Every HTTP request gets an id: the client's `X-Request-ID` when it is a short, plain token, else a new one. It is
echoed in the answer's `X-Request-ID`, put on every log line written while the request is served (a context
variable, which the event loop's tasks and `anyio` worker threads inherit), and on the access line written when
the answer is complete: method, path, status and duration. `GENSERVE_LOG_FORMAT=json` writes each line as one
JSON object (time, level, logger, message, request id, and the fields a line carries, such as model, version,
status and duration); with tracing on, a line written while a span is current carries its `trace_id` and
`span_id`, so a log pipeline can join it to the trace.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from starlette.types import Receive, Scope, Send

from app.server import tracing
from app.server.asgi import HttpMiddleware, WatchedSend, header

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_CHARS = 128
_MAX_PATH_CHARS = 256
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:\-]+")
# Fields a log line may carry besides its message (`logger.info(..., extra={...})`), in the order shown.
LINE_FIELDS = ("method", "path", "status", "duration_ms", "key", "model", "version", "trace_id", "span_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_logger = logging.getLogger("genserve.access")


def accepted_request_id(given: str | None) -> str:
    """The client's request id when it is plain and short enough to echo and log; a new one otherwise."""
    if given and len(given) <= MAX_REQUEST_ID_CHARS and _PLAIN_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class _RequestIdFilter(logging.Filter):
    """Puts the current request's id (or "-") on every record, for both formats, and the current span's ids when
    tracing is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        ids = tracing.current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        line.update({name: getattr(record, name) for name in LINE_FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """The root logger's one handler on stderr, in `log_format` ("text" or "json"), at `level`."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class RequestIdMiddleware(HttpMiddleware):
    """Gives each HTTP request its id, echoes it, and writes the request's access line when it is answered."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        current = accepted_request_id(header(scope, REQUEST_ID_HEADER.encode()))
        token = request_id.set(current)
        started = time.perf_counter()
        watched = WatchedSend(send, [(REQUEST_ID_HEADER.encode(), current.encode())])
        try:
            await self.app(scope, receive, watched)
        finally:
            status = watched.status
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            method, path = scope.get("method"), str(scope.get("path", ""))[:_MAX_PATH_CHARS]
            access_logger.info(
                "%s %s %d %.1f ms",
                method,
                path,
                status,
                duration_ms,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "key": scope.get("state", {}).get("api_key"),
                },
            )
            request_id.reset(token)
