"""Turning every failure into {"error": {"code", "message"}}; unexpected ones are logged once, answered 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ServiceError

logger = logging.getLogger(__name__)


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
    return error_response(422, "invalid_parameter", "; ".join(_describe(item) for item in error.errors()))


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, StarletteHTTPException):  # pragma: no cover
        raise error
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), dict(error.headers or {}))


def _describe(item: dict[str, Any]) -> str:
    location = [str(part) for part in item.get("loc", ()) if part not in ("query", "body", "path", "header")]
    field = ".".join(location) or "request"
    return f"{field}: {item.get('msg', 'invalid value')}"


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnhandledErrorMiddleware)


class UnhandledErrorMiddleware:
    """Logs an unexpected exception once and answers a generic 500 without its details."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                return
            response = error_response(500, "internal_error", "internal server error")
            await response(scope, receive, send)
