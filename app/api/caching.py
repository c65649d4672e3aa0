"""HTTP caching for routes whose answer is fixed by the request: strong ETags, If-None-Match and 304s."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi.responses import Response

from app.api.headers import model_headers
from app.serving.registry import ModelVersion

# A numbered version's image never changes: caches may keep it for a year without asking again.
IMMUTABLE = "public, max-age=31536000, immutable"
# What may point elsewhere after a reload ('latest', a label): caches must ask again (a cheap 304 when unchanged).
REVALIDATE = "no-cache"


def strong_etag(cache_key: dict[str, Any]) -> str:
    """A strong validator for a body fixed by `cache_key` (the request's fields and the rendering options)."""
    key = json.dumps(cache_key, sort_keys=True)
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weakly compared, as RFC 9110 asks for GET) or is `*`."""
    if not if_none_match:
        return False
    candidates = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def not_modified(model_version: ModelVersion, headers: dict[str, str]) -> Response:
    """304: the client's copy is current; the validators and cache headers go with it."""
    return Response(status_code=304, headers={**model_headers(model_version), **headers})
