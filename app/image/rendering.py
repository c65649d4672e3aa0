"""HTTP responses from what the service produced: one entry point, `Renderer.render`, for every route and format.

A view says what was produced (generated images, reconstructions, interpolation frames, encodings) and how
its body looks in each format; the renderer turns it into bytes or JSON on a worker thread, times that
(`genserve_render_seconds`), and adds the headers every response carries. A new response format is a branch
in a view's `body`; a new kind of result is a new view.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from fastapi.responses import JSONResponse, Response

from app.api.schemas import (
    EncodedImage,
    EncodeResponse,
    GenerateJSONResponse,
    InterpolateJSONResponse,
    ReconstructedImage,
    ReconstructJSONResponse,
)
from app.image import formats
from app.image.generation import Frames, GeneratedImages
from app.metrics import Metrics
from app.serving.registry import ModelVersion

MEDIA_TYPES = {
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "npy": "application/x-npy",
    "zip": "application/zip",
}
JSON = "json"
_ANIMATIONS = ("gif", "webp")
# One small image (up to 32x32 RGB: a 0.1 ms PNG) renders inline; measured with n=16 requests, sixteen of them
# inline held the event loop long enough to cost a fifth of the throughput.
INLINE_RENDER_PIXELS = 32 * 32 * 3
# A frame strip without `cols` wraps after this many frames, so long walks stay readable.
_FRAME_STRIP_COLUMNS = 16

Body = bytes | dict[str, Any]


class View(Protocol):
    """Something to send back: its model version, its own headers, and its body in a given format."""

    @property
    def model_version(self) -> ModelVersion: ...

    @property
    def pixels(self) -> int:
        """Pixel values the body is made from: what rendering it costs."""
        ...

    def headers(self) -> dict[str, str]: ...

    def body(self, format: str, level: int) -> Body:
        """The body in `format`; PNG files compressed at zlib `level`."""
        ...


def model_headers(model_version: ModelVersion) -> dict[str, str]:
    """The headers naming the model version that answered."""
    return {"X-Model": model_version.name, "X-Model-Version": str(model_version.version)}


class Renderer:
    """Turns views into responses and records how long that took.

    Small bodies (a few thumbnails) are rendered on the event loop: that takes less time than handing them to a
    thread. Larger ones go to `executor`, a pool as small as the machine's cores, so that many renders at once
    queue rather than fight over the interpreter lock.
    """

    def __init__(self, metrics: Metrics, executor: Executor, png_level: int) -> None:
        self._metrics = metrics
        self._executor = executor
        self._png_level = png_level

    async def render(self, view: View, format: str, headers: dict[str, str] | None = None) -> Response:
        if view.pixels <= INLINE_RENDER_PIXELS and format not in _ANIMATIONS:
            body = self._timed_body(view, format)
        else:
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(self._executor, self._timed_body, view, format)
        all_headers = {**model_headers(view.model_version), **view.headers(), **(headers or {})}
        if isinstance(body, dict):
            return JSONResponse(body, headers=all_headers)
        return Response(body, media_type=MEDIA_TYPES[format], headers=all_headers)

    def _timed_body(self, view: View, format: str) -> Body:
        begin = time.perf_counter()
        body = view.body(format, self._png_level)
        model_version = view.model_version
        self._metrics.observe_render(
            model_version.name, model_version.version, format, time.perf_counter() - begin
        )
        return body


class _OfGeneratedImages:
    """Views of a `GeneratedImages` result: the model version that drew them is the response's."""

    result: GeneratedImages

    @property
    def model_version(self) -> ModelVersion:
        return self.result.model_version


class _ModelHeadersOnly:
    """Views whose responses carry no headers beyond the model's."""

    def headers(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class GeneratedView(_OfGeneratedImages):
    """Images from /generate: a grid, one PNG per image in JSON or a zip, or the raw array."""

    result: GeneratedImages
    cols: int | None = None
    include_latents: bool = False

    @property
    def pixels(self) -> int:
        return int(self.result.images.size)

    def headers(self) -> dict[str, str]:
        seeds = self.result.seeds
        if not seeds:
            return {}
        return {"X-Seeds": f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])}

    def body(self, format: str, level: int) -> Body:
        if format == JSON:
            return self._json(level)
        return _image_file(format, self.result.images, self._file_names(), level, self.cols)

    def _file_names(self) -> list[str]:
        if self.result.seeds is not None:
            return [f"seed{seed:010d}.png" for seed in self.result.seeds]
        return [f"latent{index:04d}.png" for index in range(len(self.result.images))]

    def _json(self, level: int) -> dict[str, Any]:
        result = self.result
        encoded = formats.png_base64_list(result.images, level)
        seeds: list[int | None] = list(result.seeds) if result.seeds is not None else [None] * len(encoded)
        images = [
            {
                "seed": seed,
                "png_base64": png,
                "latent": result.latents[index].tolist() if self.include_latents else None,
            }
            for index, (seed, png) in enumerate(zip(seeds, encoded, strict=True))
        ]
        response = GenerateJSONResponse.model_validate(
            {**_image_header(self.model_version, result.images), "images": images}
        )
        return response.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class ReconstructionView(_OfGeneratedImages, _ModelHeadersOnly):
    """Reconstructions of uploads; `compare` puts the inputs, as the model saw them, above them in the grid."""

    filenames: list[str | None]
    inputs: np.ndarray
    result: GeneratedImages
    compare: bool = False

    @property
    def pixels(self) -> int:
        return int(self.result.images.size + (self.inputs.size if self.compare else 0))

    def body(self, format: str, level: int) -> Body:
        images = self.result.images
        if format == JSON:
            return self._json(level)
        if format == "png" and self.compare:
            return formats.grid_png_bytes(np.concatenate([self.inputs, images]), len(images), level)
        names = [f"reconstruction{index:04d}.png" for index in range(len(images))]
        return _image_file(format, images, names, level, None)

    def _json(self, level: int) -> dict[str, Any]:
        images = self.result.images
        encoded = formats.png_base64_list(images, level)
        response = ReconstructJSONResponse(
            **_image_header(self.model_version, images),
            images=[
                ReconstructedImage(filename=name, png_base64=png, latent=latent.tolist())
                for name, png, latent in zip(self.filenames, encoded, self.result.latents, strict=True)
            ],
        )
        return response.model_dump(mode="json")


@dataclass(frozen=True)
class FramesView(_ModelHeadersOnly):
    """Interpolation frames: a PNG strip, a looping GIF or WebP, or JSON with each frame's position."""

    frames: Frames
    fps: int
    cols: int | None = None

    @property
    def model_version(self) -> ModelVersion:
        return self.frames.model_version

    @property
    def pixels(self) -> int:
        return int(self.frames.images.size)

    def body(self, format: str, level: int) -> Body:
        images = self.frames.images
        if format == JSON:
            return self._json(level)
        if format == "png":
            return formats.grid_png_bytes(images, self.cols or min(len(images), _FRAME_STRIP_COLUMNS), level)
        return formats.animation_bytes(images, self.fps, format.upper())

    def _json(self, level: int) -> dict[str, Any]:
        frames = self.frames
        response = InterpolateJSONResponse(
            model=self.model_version.name,
            version=self.model_version.version,
            seeds=frames.seeds,
            method=frames.method,
            frames=[
                {"position": round(float(position), 6), "png_base64": png}
                for position, png in zip(
                    frames.positions, formats.png_base64_list(frames.images, level), strict=True
                )
            ],
        )
        return response.model_dump(mode="json")


@dataclass(frozen=True)
class EncodingView(_ModelHeadersOnly):
    """Each upload's latent (posterior mean) and log-variance, as JSON."""

    model_version: ModelVersion
    filenames: list[str | None]
    means: np.ndarray
    log_vars: np.ndarray

    @property
    def pixels(self) -> int:
        return 0

    def body(self, format: str, level: int) -> Body:
        response = EncodeResponse(
            model=self.model_version.name,
            version=self.model_version.version,
            latent_dim=self.model_version.metadata.latent_dim,
            images=[
                EncodedImage(filename=name, latent=mean.tolist(), log_var=log_var.tolist())
                for name, mean, log_var in zip(self.filenames, self.means, self.log_vars, strict=True)
            ],
        )
        return response.model_dump(mode="json")


def _image_header(model_version: ModelVersion, images: np.ndarray) -> dict[str, Any]:
    height, width, channels = images.shape[1:]
    return {
        "model": model_version.name,
        "version": model_version.version,
        "width": width,
        "height": height,
        "channels": channels,
    }


def _image_file(format: str, images: np.ndarray, names: list[str], level: int, cols: int | None) -> bytes:
    """Images as one file: the raw array (npy), one PNG each in a zip, or else a PNG grid `cols` wide."""
    if format == "npy":
        return formats.npy_bytes(images)
    if format == "zip":
        return formats.zip_bytes(images, names, level)
    return formats.grid_png_bytes(images, cols, level)
