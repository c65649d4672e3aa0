"""One limit on request body bytes for every route, enforced before anything parses the body."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.server.error_handlers import error_response
from app.server.errors import PayloadTooLarge

MULTIPART = "multipart/form-data"


def is_multipart(content_type: str) -> bool:
    """Whether a Content-Type header names a multipart form (media types are case-insensitive)."""
    return content_type.split(";", 1)[0].strip().lower() == MULTIPART


class BodyLimitMiddleware:
    """413 for a body over the limit: at once from Content-Length, else as soon as the bytes exceed it.

    Image uploads (multipart forms) get `max_upload_body_bytes`; every other body `max_body_bytes`.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_body_bytes = max_upload_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        limit = self.max_upload_body_bytes if is_multipart(content_type) else self.max_body_bytes
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            error = too_large(limit)
            await error_response(error.status_code, error.code, error.message)(scope, receive, send)
            return
        await self.app(scope, *_limited(scope, receive, send, limit))


def _limited(scope: Scope, receive: Receive, send: Send, limit: int) -> tuple[Receive, Send]:
    """`receive` that answers 413 itself once the body passes `limit`, and `send` that then goes quiet.

    The app sees a disconnect instead of the rest of the body, so no parser (FastAPI's JSON reading,
    Starlette's forms) can turn the overflow into an error of its own; whatever it answers is dropped.
    """
    received = 0
    answered = False
    started = False

    async def limited_receive() -> Message:
        nonlocal received, answered
        if answered:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                answered = True
                if not started:
                    error = too_large(limit)
                    await error_response(error.status_code, error.code, error.message)(scope, receive, send)
                return {"type": "http.disconnect"}
        return message

    async def quiet_send(message: Message) -> None:
        nonlocal started
        if answered:
            return
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    return limited_receive, quiet_send


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("body", f"the request body may hold at most {limit} bytes")
