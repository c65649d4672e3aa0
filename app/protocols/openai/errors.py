"""Errors on the OpenAI routes, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

The status codes are the service's, except that a bad field is a 400 (as on the other protocols' routes);
`param` names the field in OpenAI's words, `code` is genserve's machine-readable code (`model_not_found`,
`overloaded`, `quota_exceeded`, ...), and a 503 or 429 keeps its Retry-After. An unexpected error is logged once
and answered 500 without its details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request

from app.protocols.errors import http_status
from app.protocols.openai.protocol import ErrorBody, ErrorResponse
from app.server.errors import FieldError, ServiceError

logger = logging.getLogger(__name__)

# genserve's names of the fields the completions API calls otherwise.
_FIELD_NAMES = {"max_new_tokens": "max_tokens"}
_LOCATIONS = ("body", "query", "path")
# How pydantic names a union's members in an error's location (`stop.str`); they are not fields.
_UNION_TAGS = {"str", "int", "float", "bool"}


def error_type(status_code: int) -> str:
    """OpenAI's `type` for a status code."""
    if status_code == 401:
        return "authentication_error"
    if status_code == 403:
        return "permission_error"
    if status_code == 429:
        # OpenAI's type for a limit on tokens: the one unit these routes are charged in.
        return "tokens"
    if status_code >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorBody(message=message, type=error_type(status_code), param=param, code=code)
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=headers)


def error_body(error: ServiceError) -> ErrorResponse:
    """`error` in OpenAI's shape, its field (and the message's mentions of it) in OpenAI's words."""
    message, param = error.message, None
    if isinstance(error, FieldError):
        param = _FIELD_NAMES.get(error.field, error.field)
        for ours, theirs in _FIELD_NAMES.items():
            message = message.replace(ours, theirs)
    status_code = http_status(error)
    return ErrorResponse(
        error=ErrorBody(message=message, type=error_type(status_code), param=param, code=error.code)
    )


def service_error(error: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(error).model_dump(mode="json"), status_code=http_status(error), headers=error.headers
    )


class OpenAIErrorRoute(APIRoute):
    """A route whose service, validation and unexpected errors are answered in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer_openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as error:
                return service_error(error)
            except RequestValidationError as error:
                param, message = _first_problem(error)
                return openai_error(400, message, param=param, code="invalid_parameter")
            except ClientDisconnect:
                raise
            except Exception:
                logger.exception("unhandled error on %s %s", request.method, request.url.path)
                return openai_error(500, "internal server error", code="internal_error")

        return answer_openai_errors


def _first_problem(error: RequestValidationError) -> tuple[str | None, str]:
    """The first problem's field (without its location or union tags) and a message that starts with it."""
    problems = error.errors()
    if not problems:
        return None, "invalid request"
    first = problems[0]
    if first.get("type") == "json_invalid":
        return None, "body: not valid JSON"
    parts = [str(part) for part in first.get("loc", ()) if part not in _LOCATIONS]
    fields = [part for part in parts if part.isdigit() or (part.isidentifier() and part not in _UNION_TAGS)]
    shown = ".".join(fields) or "body"
    return (fields[0] if fields else None), f"{shown}: {first.get('msg', 'invalid value')}"
