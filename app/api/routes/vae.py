"""Routes that take images in (VAEs): POST /encode, POST /reconstruct and POST /interpolate.

Uploads are multipart/form-data files; see `app.image.uploads` for the checks and the conversion to the model's
input. Without `model`, these routes use the default model if it is a VAE, else the first VAE by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api import defaults, params
from app.api.deps import GenerationDep, RegistryDep, RendererDep, SettingsDep, UploadReaderDep
from app.api.openapi import (
    ANIMATIONS,
    IMAGE_FILES,
    AnimationFormatQuery,
    FpsQuery,
    FrameColumnsQuery,
    LoopQuery,
    StepsQuery,
    VersionQuery,
    error_responses,
    file_responses,
)
from app.api.schemas import (
    AnimationFormat,
    EncodeResponse,
    ImageFormat,
    InterpolateJSONResponse,
    InterpolationMethodName,
    ReconstructJSONResponse,
)
from app.image.rendering import EncodingView, FramesView, ReconstructionView
from app.image.uploads import UploadedImage, UploadReader
from app.latent.generation import GenerationService, InterpolationRequest, LatentRequest
from app.latent.rendering import JSON
from app.serving.registry import ModelVersion

router = APIRouter(tags=["images in (VAE)"])

_ERRORS = error_responses(404, 413, 415, 422, 500, 503, 504)
_IMAGE_FIELD = {"image": "One or more image files (PNG, JPEG, WebP, GIF, BMP)."}

VaeModelQuery = Annotated[
    str | None,
    Query(description="A VAE's name; without it the default model if it is a VAE, else the first VAE."),
]
InvertQuery = Annotated[
    bool,
    Query(
        description="Invert uploads first: for dark drawings on a light background (MNIST digits are light on dark)."
    ),
]


@dataclass(frozen=True)
class _Target:
    """The VAE version a request uploads to, and how to read its uploads."""

    model_version: ModelVersion
    invert: bool
    reader: UploadReader

    async def uploads(self, request: Request, fields: dict[str, tuple[int, int]]) -> list[UploadedImage]:
        """Every file of `fields` (name -> (fewest, most) files) as this model's input, in field order."""
        image_shape = self.model_version.metadata.image_shape
        return await self.reader.read(request, fields, image_shape, invert=self.invert)


async def _target(
    registry: RegistryDep,
    reader: UploadReaderDep,
    model: VaeModelQuery = None,
    version: VersionQuery = None,
    invert: InvertQuery = False,
) -> _Target:
    model_version = registry.resolve_encoder(params.parse_model_name(model), params.parse_version(version))
    return _Target(model_version, invert, reader)


TargetDep = Annotated[_Target, Depends(_target)]


def _multipart(fields: dict[str, str], *, repeated: bool) -> dict[str, Any]:
    """OpenAPI request body of required image file fields (each one file, or a list when `repeated`)."""
    single = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": single} if repeated else single
    properties = {name: {**schema, "description": description} for name, description in fields.items()}
    form = {"type": "object", "properties": properties, "required": list(fields)}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


async def _encode_uploads(
    generation: GenerationService, model_version: ModelVersion, images: list[UploadedImage], request: Request
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input pixels [B, H, W, C], latent means, latent log-variances) of the uploads."""
    pixels = np.stack([image.pixels for image in images])
    means, log_vars = await generation.encode(model_version, pixels, http_request=request)
    return pixels, means, log_vars


@router.post(
    "/encode",
    response_model=EncodeResponse,
    responses=_ERRORS,
    openapi_extra=_multipart(_IMAGE_FIELD, repeated=True),
)
async def encode(
    request: Request,
    target: TargetDep,
    settings: SettingsDep,
    generation: GenerationDep,
    renderer: RendererDep,
) -> Response:
    """Each uploaded image's latent (the posterior mean; POST it to /generate as `latents` to decode it)."""
    model_version = target.model_version
    uploads = await target.uploads(request, {"image": (1, settings.max_upload_images)})
    _, means, log_vars = await _encode_uploads(generation, model_version, uploads, request)
    view = EncodingView(model_version, [upload.filename for upload in uploads], means, log_vars)
    return await renderer.render(view, JSON)


@router.post(
    "/reconstruct",
    responses={
        **file_responses(ReconstructJSONResponse, IMAGE_FILES),
        **_ERRORS,
    },
    openapi_extra=_multipart(_IMAGE_FIELD, repeated=True),
)
async def reconstruct(
    request: Request,
    target: TargetDep,
    settings: SettingsDep,
    generation: GenerationDep,
    renderer: RendererDep,
    compare: Annotated[
        bool,
        Query(
            description="With format=png: the inputs (as the model saw them) in a row above their reconstructions."
        ),
    ] = False,
    format: Annotated[ImageFormat, Query(description="png (grid, default), json, npy or zip.")] = "png",
) -> Response:
    """Encode each uploaded image and decode its latent: how the model sees it."""
    model_version = target.model_version
    uploads = await target.uploads(request, {"image": (1, settings.max_upload_images)})
    pixels, means, _ = await _encode_uploads(generation, model_version, uploads, request)
    result = await generation.images(model_version, LatentRequest(latents=means), http_request=request)
    view = ReconstructionView([upload.filename for upload in uploads], pixels, result, compare)
    return await renderer.render(view, format)


@router.post(
    "/interpolate",
    responses={
        **file_responses(InterpolateJSONResponse, ANIMATIONS),
        **_ERRORS,
    },
    openapi_extra=_multipart(
        {"start": "The first image (PNG, JPEG, WebP, GIF, BMP).", "end": "The last image."}, repeated=False
    ),
)
async def interpolate_images(
    request: Request,
    target: TargetDep,
    settings: SettingsDep,
    generation: GenerationDep,
    renderer: RendererDep,
    steps: StepsQuery = defaults.STEPS,
    method: Annotated[
        InterpolationMethodName,
        Query(description="lerp (default: a straight line between the two latents) or slerp."),
    ] = InterpolationMethodName.lerp,
    loop: LoopQuery = False,
    format: AnimationFormatQuery = AnimationFormat.png,
    fps: FpsQuery = defaults.FPS,
    cols: FrameColumnsQuery = None,
) -> Response:
    """Morph one uploaded image into another: encode both, walk between their latents, decode every frame."""
    params.check_range("steps", steps, 2, settings.max_steps)
    model_version = target.model_version
    uploads = await target.uploads(request, {"start": (1, 1), "end": (1, 1)})
    _, means, _ = await _encode_uploads(generation, model_version, uploads, request)
    interpolation = InterpolationRequest(steps=steps, method=method.value, loop=loop, keyframe_latents=means)
    plan = generation.plan_interpolation(model_version, interpolation)
    frames = await generation.interpolate(plan, http_request=request)
    return await renderer.render(FramesView(frames, fps, cols), format.value)
