"""HTTP responses from what generators that draw from latents produced: one entry point, `Renderer.render`, for
every route and format.

A view says what was produced (generated images or clips, reconstructions, interpolation frames, encodings) and
how its body looks in each format (the image views are `app/image/rendering.py`'s, the sound views
`app/audio/rendering.py`'s); the renderer turns it into bytes or JSON on a worker thread, times that
(`genserve_render_seconds`), and adds the headers every response carries. Files and JSON answers carry the
result's provenance (`provenance.py`) unless `GENSERVE_IMAGE_METADATA` is off. A new response format is a branch
in a view's `body`; a new kind of result is a new view.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi.responses import JSONResponse, Response

from app.api.headers import model_headers
from app.latent import provenance
from app.metrics import Metrics
from app.server import tracing
from app.serving.registry import ModelVersion

MEDIA_TYPES = {
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "npy": "application/x-npy",
    "zip": "application/zip",
    "wav": "audio/wav",
    "flac": "audio/flac",
}
JSON = "json"
_ANIMATIONS = ("gif", "webp")
# One small image (up to 32x32 RGB: a 0.1 ms PNG) renders inline; measured with n=16 requests, sixteen of them
# inline held the event loop long enough to cost a fifth of the throughput.
INLINE_RENDER_PIXELS = 32 * 32 * 3

Body = bytes | dict[str, Any]


@dataclass(frozen=True)
class RenderOptions:
    """How bodies are written: PNG's zlib level (0-9), and whether files and JSON carry their provenance."""

    png_level: int
    metadata: bool = True


class View(Protocol):
    """Something to send back: its model version, its own headers, and its body in a given format."""

    @property
    def model_version(self) -> ModelVersion: ...

    @property
    def pixels(self) -> int:
        """Pixel values the body is made from: what rendering it costs."""
        ...

    def headers(self) -> dict[str, str]: ...

    def body(self, format: str, options: RenderOptions) -> Body:
        """The body in `format`, written as `options` say."""
        ...


class Renderer:
    """Turns views into responses and records how long that took.

    Small bodies (a few thumbnails) are rendered on the event loop: that takes less time than handing them to a
    thread. Larger ones go to `executor`, a pool as small as the machine's cores, so that many renders at once
    queue rather than fight over the interpreter lock.
    """

    def __init__(self, metrics: Metrics, executor: Executor, options: RenderOptions) -> None:
        self._metrics = metrics
        self._executor = executor
        self.options = options

    def rendering_key(self) -> dict[str, Any]:
        """What bodies depend on besides the result: for ETags, which must change when the bytes would."""
        return {
            "png_level": self.options.png_level,
            "metadata": self.options.metadata,
            "service_version": provenance.SERVICE_VERSION if self.options.metadata else None,
        }

    async def render(self, view: View, format: str, headers: dict[str, str] | None = None) -> Response:
        body = await self.body(view, format)
        return self.respond(view.model_version, format, body, {**view.headers(), **(headers or {})})

    async def body(self, view: View, format: str) -> Body:
        """The view's body in `format`, on the event loop when it is small, else on the render pool."""
        with tracing.span("render", format=format):
            if view.pixels <= INLINE_RENDER_PIXELS and format not in _ANIMATIONS:
                return self._timed_body(view, format)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._timed_body, view, format)

    def respond(
        self, model_version: ModelVersion, format: str, body: Body, headers: dict[str, str]
    ) -> Response:
        """The response for a rendered `body`, with the model's headers and `headers`."""
        all_headers = {**model_headers(model_version), **headers}
        if isinstance(body, dict):
            return JSONResponse(body, headers=all_headers)
        return Response(body, media_type=MEDIA_TYPES[format], headers=all_headers)

    def _timed_body(self, view: View, format: str) -> Body:
        begin = time.perf_counter()
        body = view.body(format, self.options)
        model_version = view.model_version
        self._metrics.observe_render(
            model_version.name, model_version.version, format, time.perf_counter() - begin
        )
        return body
