"""API keys on the inference surface (off unless `GENSERVE_API_KEYS_FILE` names a file).

The file holds one `name: key` line per client (blank lines and `#` comments are skipped); names are what logs and
metrics show, never the keys. A key may be followed by its client's quota (`team-a: KEY images_per_s=20
images_burst=40 tokens_per_s=500`, see `app.server.quotas`); lines of one name share its quota. A request presents
its key as `Authorization: Bearer KEY` or `X-API-Key: KEY` on HTTP, and as `authorization: Bearer KEY` metadata on
gRPC; without one, or with one the file does not hold, the answer is 401. Keys are kept as SHA-256 digests and compared in constant time. The file is looked at again at most
once a second and re-read when it changed, so keys rotate without a restart; a file that cannot be read keeps
the keys read before (and logs why). Health, readiness, metrics, the API documentation and the playground page stay
open (the page's own requests carry the key typed into it); the admin API has its own token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from app.metrics import Metrics
from app.protocols.errors import plain_error
from app.protocols.openai.errors import openai_error
from app.server.asgi import HttpMiddleware, header
from app.server.error_handlers import error_response
from app.server.errors import Unauthorized
from app.server.quotas import Client, Quota, current_client, parse_quota
from genserve.store import read_regular_file

logger = logging.getLogger(__name__)

MAX_KEYS = 1000
MIN_KEY_CHARS = 16
_MAX_FILE_BYTES = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RECHECK_S = 1.0
# Paths answered without a key: probes, metrics, the API's own documentation and the playground page (and `/`,
# which sends browsers there); /admin checks its own token.
OPEN_PATHS = (
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/docs-assets",
    "/playground",
    "/admin",
)
# Paths whose errors are in the inference protocols' `{"error": "message"}` shape.
PROTOCOL_PREFIXES = ("/v1/", "/v2")
# Paths whose errors are in OpenAI's `{"error": {"message", "type", "param", "code"}}` shape.
OPENAI_PREFIX = "/openai/"
MISSING_KEY = "an API key is needed: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
UNKNOWN_KEY = "unknown API key"


@dataclass(frozen=True)
class KeyFile:
    """What a keys file says: each key's name (by the key's SHA-256 digest) and the quotas its lines set."""

    names: dict[bytes, str]
    quotas: dict[str, Quota]


def read_key_file(text: str) -> KeyFile:
    """The keys and quotas of `name: key [options]` lines; a bad line is a ValueError naming it."""
    keys: dict[bytes, str] = {}
    quotas: dict[str, Quota] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, rest = (part.strip() for part in line.partition(":"))
        if not separator or not _NAME.fullmatch(name):
            raise ValueError(
                f"line {number}: expected 'name: key' with a name of letters, digits, '.', '_', '-'"
            )
        key, options = (rest.split(maxsplit=1) + ["", ""])[:2]
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(
                f"line {number}: the key of {name!r} needs {MIN_KEY_CHARS} or more characters, no spaces"
            )
        digest = hashlib.sha256(key.encode()).digest()
        if digest in keys:
            raise ValueError(f"line {number}: {name!r} has the key of {keys[digest]!r}")
        keys[digest] = name
        _add_quota(quotas, name, options, number)
    if len(keys) > MAX_KEYS:
        raise ValueError(f"holds {len(keys)} keys; at most {MAX_KEYS}")
    return KeyFile(keys, quotas)


def _add_quota(quotas: dict[str, Quota], name: str, options: str, number: int) -> None:
    try:
        quota = parse_quota(options)
    except ValueError as error:
        raise ValueError(f"line {number}: {name!r}: {error}") from None
    if not quota:
        return
    if quotas.get(name, quota) != quota:
        raise ValueError(f"line {number}: {name!r} has another quota on an earlier line; give it once")
    quotas[name] = quota


def parse_keys(text: str) -> dict[bytes, str]:
    """SHA-256 digest of each key -> its name, from `name: key` lines; a bad line is a ValueError naming it."""
    return read_key_file(text).names


@dataclass
class ApiKeys:
    """The keys of a file, re-read when it changes."""

    path: Path
    _file: KeyFile
    _stamp: tuple[int, int] | None = None
    _checked: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic)

    @classmethod
    def load(cls, path: Path, *, clock: Callable[[], float] = time.monotonic) -> ApiKeys:
        """The file's keys; a file that cannot be read or parsed stops start-up with the reason. `clock` (seconds)
        times the checks for a changed file."""
        keys = cls(Path(path), KeyFile({}, {}), clock=clock)
        keys._file = read_key_file(read_regular_file(keys.path, _MAX_FILE_BYTES).decode())
        keys._stamp = keys._file_stamp()
        return keys

    @property
    def names(self) -> list[str]:
        return sorted(self._file.names.values())

    def client_of(self, presented: str) -> Client | None:
        """The client holding `presented`, with its quota, or None; constant time in the key."""
        self._refresh()
        current = self._file
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for known, name in current.names.items():
            if hmac.compare_digest(digest, known):
                found = name
        return None if found is None else Client(found, current.quotas.get(found, {}))

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._checked < _RECHECK_S:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._file = read_key_file(read_regular_file(self.path, _MAX_FILE_BYTES).decode())
        except (OSError, ValueError, UnicodeDecodeError) as error:
            logger.warning("keeping the API keys read before: %s: %s", self.path.name, error)
            return
        finally:
            self._stamp = stamp
        logger.info("API keys re-read: %d keys", len(self._file.names))


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: `Authorization: Bearer KEY`, else `X-API-Key: KEY`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key.strip() if api_key and api_key.strip() else None


def check_key(keys: ApiKeys, presented: str | None, metrics: Metrics) -> Client:
    """The client holding a presented key; Unauthorized without a key or with one the file does not hold.
    Both outcomes are counted."""
    if presented is None:
        metrics.key_refusals.labels(reason="missing").inc()
        raise Unauthorized(MISSING_KEY)
    client = keys.client_of(presented)
    if client is None:
        metrics.key_refusals.labels(reason="unknown").inc()
        raise Unauthorized(UNKNOWN_KEY)
    metrics.key_requests.labels(key=client.name).inc()
    return client


def _is_open(path: str, open_paths: Iterable[str]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in open_paths)


class ApiKeyMiddleware(HttpMiddleware):
    """Refuses HTTP requests without a known key, except on the open paths; puts the client's name on the
    request (`scope["state"]["api_key"]`) for logs and metrics, and the client in `current_client` for quotas."""

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
            client = check_key(self.keys, presented, self.metrics)
        except Unauthorized as error:
            if path.startswith(PROTOCOL_PREFIXES):
                response = plain_error(401, error.message, error.headers)
            elif path.startswith(OPENAI_PREFIX):
                response = openai_error(401, error.message, code=error.code, headers=error.headers)
            else:
                response = error_response(401, error.code, error.message, error.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = client.name
        token = current_client.set(client)
        try:
            await self.app(scope, receive, send)
        finally:
            current_client.reset(token)
