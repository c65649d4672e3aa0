"""Views of an image generator's results, rendered by the one `Renderer` (`app/latent/rendering.py`): generated
images (`GeneratedView`), one seed's image file (`ImageFileView`), reconstructions of uploads
(`ReconstructionView`), interpolation frames (`FramesView`) and encodings (`EncodingView`), each as a PNG grid or
strip, an animation, a zip, npy or JSON. Image files and JSON answers carry the result's provenance
(`app/latent/provenance.py`) unless `GENSERVE_IMAGE_METADATA` is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.api.headers import seeds_header
from app.api.schemas import (
    EncodedImage,
    EncodeResponse,
    GenerateJSONResponse,
    InterpolateJSONResponse,
    Provenance,
    ReconstructedImage,
    ReconstructJSONResponse,
)
from app.image import formats
from app.latent import provenance
from app.latent.formats import npy_bytes
from app.latent.generation import Frames, GeneratedImages
from app.latent.rendering import JSON, Body, RenderOptions
from app.serving.registry import ModelVersion

# A frame strip without `cols` wraps after this many frames, so long walks stay readable.
_FRAME_STRIP_COLUMNS = 16


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
        return seeds_header(self.result.seeds)

    def body(self, format: str, options: RenderOptions) -> Body:
        record = provenance.of_generated(self.result) if options.metadata else None
        if format == JSON:
            return self._json(options.png_level, record)
        return _image_file(
            format, self.result.images, self._file_names(), options.png_level, self.cols, record
        )

    def _file_names(self) -> list[str]:
        if self.result.seeds is not None:
            return [f"seed{seed:010d}.png" for seed in self.result.seeds]
        return [f"latent{index:04d}.png" for index in range(len(self.result.images))]

    def _json(self, level: int, record: Provenance | None) -> dict[str, Any]:
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
            {**_image_header(self.model_version, result.images), "images": images, "provenance": record}
        )
        return response.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class ImageFileView(_OfGeneratedImages):
    """One image as a file of its own, PNG or lossless WebP, with no grid around it (image URLs)."""

    result: GeneratedImages

    @property
    def pixels(self) -> int:
        return int(self.result.images[0].size)

    def headers(self) -> dict[str, str]:
        return seeds_header(self.result.seeds)

    def body(self, format: str, options: RenderOptions) -> Body:
        record = provenance.of_generated(self.result) if options.metadata else None
        image = self.result.images[0]
        if format == "webp":
            return formats.webp_bytes(image, record)
        return formats.png_bytes(image, options.png_level, record)


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

    def body(self, format: str, options: RenderOptions) -> Body:
        images, level = self.result.images, options.png_level
        composite = format == "png" and self.compare
        record = (
            provenance.of_generated(self.result, source="uploads", composite=composite)
            if options.metadata
            else None
        )
        if format == JSON:
            return self._json(level, record)
        if composite:
            return formats.grid_png_bytes(np.concatenate([self.inputs, images]), len(images), level, record)
        names = [f"reconstruction{index:04d}.png" for index in range(len(images))]
        return _image_file(format, images, names, level, None, record)

    def _json(self, level: int, record: Provenance | None) -> dict[str, Any]:
        images = self.result.images
        encoded = formats.png_base64_list(images, level)
        response = ReconstructJSONResponse(
            **_image_header(self.model_version, images),
            images=[
                ReconstructedImage(filename=name, png_base64=png, latent=latent.tolist())
                for name, png, latent in zip(self.filenames, encoded, self.result.latents, strict=True)
            ],
        )
        return _with_provenance(response.model_dump(mode="json"), record)


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

    def body(self, format: str, options: RenderOptions) -> Body:
        images, level = self.frames.images, options.png_level
        record = provenance.of_frames(self.frames) if options.metadata else None
        if format == JSON:
            return self._json(level, record)
        if format == "png":
            columns = self.cols or min(len(images), _FRAME_STRIP_COLUMNS)
            return formats.grid_png_bytes(images, columns, level, record)
        return formats.animation_bytes(images, self.fps, format.upper(), record)

    def _json(self, level: int, record: Provenance | None) -> dict[str, Any]:
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
        return _with_provenance(response.model_dump(mode="json"), record)


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

    def body(self, format: str, options: RenderOptions) -> Body:
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


def _with_provenance(body: dict[str, Any], record: Provenance | None) -> dict[str, Any]:
    """The JSON body with the record's fields (as files hold them), or no `provenance` key when metadata is off;
    the body's other null fields keep their meaning."""
    body.pop("provenance", None)
    if record is not None:
        body["provenance"] = provenance.provenance_fields(record)
    return body


def _image_file(
    format: str,
    images: np.ndarray,
    names: list[str],
    level: int,
    cols: int | None,
    record: Provenance | None,
) -> bytes:
    """Images as one file: the raw array (npy, which keeps no metadata), one PNG each in a zip, or else a PNG
    grid `cols` wide."""
    if format == "npy":
        return npy_bytes(images)
    if format == "zip":
        return formats.zip_bytes(images, names, level, record)
    return formats.grid_png_bytes(images, cols, level, record)
