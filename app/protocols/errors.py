"""Errors on inference-protocol routes: `{"error": "message"}`, the shape their clients read.

The rest of the service answers `{"error": {"code", "message"}}`; routes built with `PlainErrorRoute` answer in
the protocols' shape instead, with the same status codes and headers (Retry-After on a 503), except that a bad
field is a 400 as those protocols specify, not a 422; an unexpected error is logged once and answered 500 in the
same shape, without its details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request

from app.server.errors import ServiceError

logger = logging.getLogger(__name__)


def plain_error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def http_status(error: ServiceError) -> int:
    """The status an inference protocol gives `error`: ours, except 400 for a request it cannot accept."""
    return 400 if error.status_code == 422 else error.status_code


class PlainErrorRoute(APIRoute):
    """A route whose service and validation errors are answered as `{"error": "message"}`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer_plain_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as error:
                return plain_error(http_status(error), error.message, error.headers)
            except RequestValidationError as error:
                return plain_error(400, _first_problem(error))
            except ClientDisconnect:
                raise
            except Exception:
                logger.exception("unhandled error on %s %s", request.method, request.url.path)
                return plain_error(500, "internal server error")

        return answer_plain_errors


def _first_problem(error: RequestValidationError) -> str:
    problems = error.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    field = ".".join(str(part) for part in first.get("loc", ()) if part not in ("path", "query", "body"))
    return f"{field or 'request'}: {first.get('msg', 'invalid value')}"


def protocol_router(prefix: str, tag: str) -> APIRouter:
    """A protocol's router: its errors in the protocol's shape, and left out of the OpenAPI schema (each
    protocol has its own specification)."""
    return APIRouter(prefix=prefix, tags=[tag], route_class=PlainErrorRoute, include_in_schema=False)
