"""Turning every failure into {"error": {"code", "message"}}; unexpected ones are logged once, answered 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app.server.asgi import HttpMiddleware, WatchedSend
from app.server.errors import ClientDisconnected, ServiceError

logger = logging.getLogger(__name__)

# A request with many bad fields is told about the first few, so an error stays short whatever was sent.
_MAX_FIELDS_DESCRIBED = 5
_UNION_TAGS = {"int", "float", "str", "bool"}


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status_code, headers=headers
    )


async def _service_error(_: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, ServiceError):  # pragma: no cover - registered for ServiceError only
        raise error
    return error_response(error.status_code, error.code, error.message, error.headers)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, RequestValidationError):  # pragma: no cover
        raise error
    described: dict[str, str] = {}
    for item in error.errors():
        field, message = _describe(item)
        described.setdefault(field, message)  # a union reports each member; its first message is enough
    shown = [f"{field}: {message}" for field, message in list(described.items())[:_MAX_FIELDS_DESCRIBED]]
    more = len(described) - len(shown)
    return error_response(422, "invalid_parameter", "; ".join(shown) + (f"; and {more} more" if more else ""))


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, StarletteHTTPException):  # pragma: no cover
        raise error
    if error.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8, say): a bad field like any other.
        return error_response(422, "invalid_parameter", "body: cannot be read as UTF-8 JSON")
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), dict(error.headers or {}))


async def _client_disconnected(request: Request, _: Exception) -> Response:
    # Nobody is left to read an answer; this is not a server error, so it is neither logged nor a 500.
    logger.debug("client left during %s %s", request.method, request.url.path)
    return Response(status_code=ClientDisconnected.status_code)


def _describe(item: dict[str, Any]) -> tuple[str, str]:
    """(field, message) of one validation error; union member tags such as `int` are left out of the field."""
    location = [
        str(part)
        for part in item.get("loc", ())
        if part not in ("query", "body", "path", "header") and part not in _UNION_TAGS
    ]
    return ".".join(location) or "request", str(item.get("msg", "invalid value"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_middleware(UnhandledErrorMiddleware)


class UnhandledErrorMiddleware(HttpMiddleware):
    """Logs an unexpected exception once and answers a generic 500 without its details."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if watched.started:
                return
            response = error_response(500, "internal_error", "internal server error")
            await response(scope, receive, send)
