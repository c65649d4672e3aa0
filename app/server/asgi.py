"""What the service's pure ASGI middlewares share: HTTP only, and watching the answer go out."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class WatchedSend:
    """`send`, noting whether the answer has started and with which status (500 until it starts), and adding
    `headers` to its start."""

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self._send = send
        self._headers = headers or []
        self.started = False
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            if self._headers:
                message["headers"] = [*message.get("headers", []), *self._headers]
        await self._send(message)


def header(scope: Scope, name: bytes) -> str | None:
    """The value of request header `name` (lower case), or None."""
    return next((value.decode("latin-1") for key, value in scope["headers"] if key == name), None)


class HttpMiddleware:
    """A pure ASGI middleware that handles HTTP requests in `handle` and passes everything else (lifespan,
    websockets) through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
