"""Routes that take images in (VAEs): POST /encode, POST /reconstruct and POST /interpolate.

Uploads are multipart/form-data files; see `app.uploads` for the checks and the conversion to the model's
input. Without `model`, these routes use the default model if it is a VAE, else the first VAE by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from app import imaging, params
from app.config import Settings
from app.deps import GenerationDep, RegistryDep, SettingsDep
from app.generation import GenerationService
from app.latents import interpolation_path
from app.registry import ModelVersion
from app.routes.interpolate import ANIMATION_MEDIA_TYPES, encode_frames, frames_payload
from app.schemas import (
    AnimationFormat,
    EncodedImage,
    EncodeResponse,
    ErrorResponse,
    ImageFormat,
    InterpolateJSONResponse,
    InterpolationMethodName,
    ReconstructedImage,
    ReconstructJSONResponse,
)
from app.uploads import UploadedImage, UploadLimits, files_in, load_image, read_form

router = APIRouter(tags=["images in (VAE)"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 415, 422, 500, 503, 504)
}
_IMAGE_MEDIA_TYPES = {
    ImageFormat.png: "image/png",
    ImageFormat.npy: "application/x-npy",
    ImageFormat.zip: "application/zip",
}

ModelQuery = Annotated[
    str | None,
    Query(description="A VAE's name; without it the default model if it is a VAE, else the first VAE."),
]
VersionQuery = Annotated[str | None, Query(description="Version number, label or 'latest'.")]
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


async def _target(
    registry: RegistryDep, model: ModelQuery = None, version: VersionQuery = None, invert: InvertQuery = False
) -> _Target:
    model_version = registry.resolve_encoder(params.parse_model_name(model), params.parse_version(version))
    return _Target(model_version, invert)


TargetDep = Annotated[_Target, Depends(_target)]


def _multipart(fields: dict[str, str], *, repeated: bool) -> dict[str, Any]:
    """OpenAPI request body of required image file fields (each one file, or a list when `repeated`)."""
    single = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": single} if repeated else single
    properties = {name: {**schema, "description": description} for name, description in fields.items()}
    form = {"type": "object", "properties": properties, "required": list(fields)}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


def _limits(settings: Settings) -> UploadLimits:
    return UploadLimits(settings.max_upload_bytes, settings.max_upload_side, settings.max_upload_images)


async def _uploaded_images(
    request: Request, settings: Settings, target: _Target, fields: dict[str, tuple[int, int]]
) -> list[UploadedImage]:
    """Every file of `fields` (name -> (fewest, most) files), read, checked and converted, in field order."""
    limits = _limits(settings)
    form = await read_form(request, limits)
    try:
        image_shape = target.model_version.metadata.image_shape
        images = []
        for field, (fewest, most) in fields.items():
            for upload in files_in(form, field, required=fewest, limit=most):
                images.append(await load_image(field, upload, image_shape, limits, invert=target.invert))
        return images
    finally:
        await form.close()


async def _encode_uploads(
    generation: GenerationService, model_version: ModelVersion, images: list[UploadedImage], request: Request
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input pixels [B, H, W, C], latent means, latent log-variances) of the uploads."""
    pixels = np.stack([image.pixels for image in images])
    means, log_vars = await generation.latents_for_images(model_version, pixels, request=request)
    return pixels, means, log_vars


def _headers(model_version: ModelVersion) -> dict[str, str]:
    return {"X-Model": model_version.name, "X-Model-Version": str(model_version.version)}


@router.post(
    "/encode",
    response_model=EncodeResponse,
    responses=_ERRORS,
    openapi_extra=_multipart(
        {"image": "One or more image files (PNG, JPEG, WebP, GIF, BMP)."}, repeated=True
    ),
)
async def encode(
    request: Request,
    target: TargetDep,
    settings: SettingsDep,
    generation: GenerationDep,
) -> JSONResponse:
    """Each uploaded image's latent (the posterior mean; POST it to /generate as `latents` to decode it)."""
    model_version = target.model_version
    uploads = await _uploaded_images(request, settings, target, {"image": (1, settings.max_upload_images)})
    _, means, log_vars = await _encode_uploads(generation, model_version, uploads, request)
    response = EncodeResponse(
        model=model_version.name,
        version=model_version.version,
        latent_dim=model_version.metadata.latent_dim,
        images=[
            EncodedImage(filename=upload.filename, latent=mean.tolist(), log_var=log_var.tolist())
            for upload, mean, log_var in zip(uploads, means, log_vars, strict=True)
        ],
    )
    return JSONResponse(response.model_dump(mode="json"), headers=_headers(model_version))


@router.post(
    "/reconstruct",
    responses={
        200: {
            "content": {"image/png": {}, "application/x-npy": {}, "application/zip": {}},
            "model": ReconstructJSONResponse,
        },
        **_ERRORS,
    },
    openapi_extra=_multipart(
        {"image": "One or more image files (PNG, JPEG, WebP, GIF, BMP)."}, repeated=True
    ),
)
async def reconstruct(
    request: Request,
    target: TargetDep,
    settings: SettingsDep,
    generation: GenerationDep,
    compare: Annotated[
        bool,
        Query(
            description="With format=png: the inputs (as the model saw them) in a row above their reconstructions."
        ),
    ] = False,
    format: Annotated[
        ImageFormat, Query(description="png (grid, default), json, npy or zip.")
    ] = ImageFormat.png,
) -> Response:
    """Encode each uploaded image and decode its latent: how the model sees it."""
    model_version = target.model_version
    uploads = await _uploaded_images(request, settings, target, {"image": (1, settings.max_upload_images)})
    pixels, means, _ = await _encode_uploads(generation, model_version, uploads, request)
    images = await generation.generate(model_version, means, request=request)
    headers = _headers(model_version)
    names = [upload.filename for upload in uploads]
    if format is ImageFormat.json:
        payload = await generation.encode(
            model_version, format.value, _reconstruct_payload, model_version, names, images, means
        )
        return JSONResponse(payload, headers=headers)
    content = await generation.encode(
        model_version, format.value, _encode_reconstructions, format, pixels, images, compare
    )
    return Response(content, media_type=_IMAGE_MEDIA_TYPES[format], headers=headers)


def _encode_reconstructions(
    format: ImageFormat, inputs: np.ndarray, images: np.ndarray, compare: bool
) -> bytes:
    if format is ImageFormat.npy:
        return imaging.encode_npy(images)
    if format is ImageFormat.zip:
        return imaging.encode_zip(images, [f"reconstruction{index:04d}.png" for index in range(len(images))])
    if compare:
        return imaging.encode_grid_png(np.concatenate([inputs, images]), len(images))
    return imaging.encode_grid_png(images)


def _reconstruct_payload(
    model_version: ModelVersion, names: list[str | None], images: np.ndarray, means: np.ndarray
) -> dict[str, Any]:
    height, width, channels = images.shape[1:]
    encoded = imaging.encode_png_list_base64(images)
    response = ReconstructJSONResponse(
        model=model_version.name,
        version=model_version.version,
        width=width,
        height=height,
        channels=channels,
        images=[
            ReconstructedImage(filename=name, png_base64=png, latent=mean.tolist())
            for name, png, mean in zip(names, encoded, means, strict=True)
        ],
    )
    return response.model_dump(mode="json")


@router.post(
    "/interpolate",
    responses={
        200: {
            "content": {"image/png": {}, "image/gif": {}, "image/webp": {}},
            "model": InterpolateJSONResponse,
        },
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
    steps: Annotated[int, Query(description="Number of frames (2..GENSERVE_MAX_STEPS).")] = 16,
    method: Annotated[
        InterpolationMethodName,
        Query(description="lerp (default: a straight line between the two latents) or slerp."),
    ] = InterpolationMethodName.lerp,
    loop: Annotated[bool, Query(description="Return to the first image, for looping animations.")] = False,
    format: Annotated[AnimationFormat, Query(description="png (frame strip), gif, webp or json.")] = (
        AnimationFormat.png
    ),
    fps: Annotated[int, Query(ge=1, le=60, description="Frames per second of gif/webp.")] = 12,
    cols: Annotated[int | None, Query(ge=1, le=1024, description="Columns of the png frame grid.")] = None,
) -> Response:
    """Morph one uploaded image into another: encode both, walk between their latents, decode every frame."""
    params.check_range("steps", steps, 2, settings.max_steps)
    model_version = target.model_version
    uploads = await _uploaded_images(request, settings, target, {"start": (1, 1), "end": (1, 1)})
    _, means, _ = await _encode_uploads(generation, model_version, uploads, request)
    latents, positions = interpolation_path(means, steps, method.value, loop=loop)
    images = await generation.generate(model_version, latents, request=request)
    headers = _headers(model_version)
    if format is AnimationFormat.json:
        payload = await generation.encode(
            model_version, format.value, frames_payload, model_version, None, method.value, images, positions
        )
        return JSONResponse(payload, headers=headers)
    content = await generation.encode(model_version, format.value, encode_frames, format, images, fps, cols)
    return Response(content, media_type=ANIMATION_MEDIA_TYPES[format], headers=headers)
