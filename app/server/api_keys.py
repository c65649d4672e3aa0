"""API keys on the inference surface (off unless `GENSERVE_API_KEYS_FILE` names a file).

The file holds one `name: key` line per client (blank lines and `#` comments are skipped); names are what logs and
metrics show, never the keys. A request presents its key as `Authorization: Bearer KEY` or `X-API-Key: KEY` on
HTTP, and as `authorization: Bearer KEY` metadata on gRPC; without one, or with one the file does not hold, the
answer is 401. Keys are kept as SHA-256 digests and compared in constant time. The file is looked at again at most
once a second and re-read when it changed, so keys rotate without a restart; a file that cannot be read keeps
the keys read before (and logs why). Health, readiness, metrics and the API documentation stay open; the admin
API has its own token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from app.metrics import Metrics
from app.protocols.errors import plain_error
from app.server.asgi import HttpMiddleware, header
from app.server.error_handlers import error_response
from app.server.errors import Unauthorized
from genserve.store import read_regular_file

logger = logging.getLogger(__name__)

MAX_KEYS = 1000
MIN_KEY_CHARS = 16
_MAX_FILE_BYTES = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RECHECK_S = 1.0
# Paths answered without a key: probes, metrics and the API's own documentation; /admin checks its own token.
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/docs-assets", "/admin")
# Paths whose errors are in the inference protocols' `{"error": "message"}` shape.
PROTOCOL_PREFIXES = ("/v1/", "/v2")
MISSING_KEY = "an API key is needed: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
UNKNOWN_KEY = "unknown API key"


def parse_keys(text: str) -> dict[bytes, str]:
    """SHA-256 digest of each key -> its name, from `name: key` lines; a bad line is a ValueError naming it."""
    keys: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, key = (part.strip() for part in line.partition(":"))
        if not separator or not _NAME.fullmatch(name):
            raise ValueError(
                f"line {number}: expected 'name: key' with a name of letters, digits, '.', '_', '-'"
            )
        if len(key) < MIN_KEY_CHARS or any(char.isspace() for char in key):
            raise ValueError(
                f"line {number}: the key of {name!r} needs {MIN_KEY_CHARS} or more characters, no spaces"
            )
        digest = hashlib.sha256(key.encode()).digest()
        if digest in keys:
            raise ValueError(f"line {number}: {name!r} has the key of {keys[digest]!r}")
        keys[digest] = name
    if len(keys) > MAX_KEYS:
        raise ValueError(f"holds {len(keys)} keys; at most {MAX_KEYS}")
    return keys


@dataclass
class ApiKeys:
    """The keys of a file, re-read when it changes."""

    path: Path
    _keys: dict[bytes, str]
    _stamp: tuple[int, int] | None = None
    _checked: float = 0.0

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        """The file's keys; a file that cannot be read or parsed stops start-up with the reason."""
        keys = cls(Path(path), {})
        keys._keys = parse_keys(read_regular_file(keys.path, _MAX_FILE_BYTES).decode())
        keys._stamp = keys._file_stamp()
        return keys

    @property
    def names(self) -> list[str]:
        return sorted(self._keys.values())

    def name_of(self, presented: str) -> str | None:
        """The name of the client holding `presented`, or None; constant time in the key."""
        self._refresh()
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for known, name in self._keys.items():
            if hmac.compare_digest(digest, known):
                found = name
        return found

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _RECHECK_S:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._keys = parse_keys(read_regular_file(self.path, _MAX_FILE_BYTES).decode())
        except (OSError, ValueError, UnicodeDecodeError) as error:
            logger.warning("keeping the API keys read before: %s: %s", self.path.name, error)
            return
        finally:
            self._stamp = stamp
        logger.info("API keys re-read: %d keys", len(self._keys))


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: `Authorization: Bearer KEY`, else `X-API-Key: KEY`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key.strip() if api_key and api_key.strip() else None


def check_key(keys: ApiKeys, presented: str | None, metrics: Metrics) -> str:
    """The client's name for a presented key; Unauthorized without a key or with one the file does not hold.
    Both outcomes are counted."""
    if presented is None:
        metrics.key_refusals.labels(reason="missing").inc()
        raise Unauthorized(MISSING_KEY)
    name = keys.name_of(presented)
    if name is None:
        metrics.key_refusals.labels(reason="unknown").inc()
        raise Unauthorized(UNKNOWN_KEY)
    metrics.key_requests.labels(key=name).inc()
    return name


def _is_open(path: str, open_paths: Iterable[str]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in open_paths)


class ApiKeyMiddleware(HttpMiddleware):
    """Refuses HTTP requests without a known key, except on the open paths; puts the client's name on the
    request (`scope["state"]["api_key"]`) for logs and metrics."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, metrics: Metrics) -> None:
        super().__init__(app)
        self.keys = keys
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if _is_open(path, OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        presented = presented_key(header(scope, b"authorization"), header(scope, b"x-api-key"))
        try:
            name = check_key(self.keys, presented, self.metrics)
        except Unauthorized as error:
            if path.startswith(PROTOCOL_PREFIXES):
                response = plain_error(401, error.message, error.headers)
            else:
                response = error_response(401, error.code, error.message, error.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = name
        await self.app(scope, receive, send)
