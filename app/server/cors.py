"""Browsers' cross-origin requests (CORS), allowed for the origins `GENSERVE_CORS_ORIGINS` names; off by default."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

ALLOWED_METHODS = ("GET", "HEAD", "POST")
# What a page may send beyond the CORS-safelisted headers: API keys, request ids and cache validators.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-None-Match", "X-API-Key", "X-Request-ID")
# What a page's scripts may read beyond the safelisted response headers.
EXPOSED_HEADERS = ("ETag", "Retry-After", "X-Model", "X-Model-Version", "X-Request-ID", "X-Seeds")
# How long a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE_S = 600


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Answer preflights and mark answers for `origins` (`*`: any); without origins, nothing is added."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
