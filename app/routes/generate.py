"""POST /generate: images from seeds or explicit latents, as a PNG grid, JSON, .npy or .zip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response

from app import imaging, params
from app.deps import GenerationDep, RegistryDep, SettingsDep
from app.errors import InvalidParameter
from app.generation import GenerationService
from app.latents import truncate
from app.registry import ModelVersion
from app.schemas import ErrorResponse, GenerateBody, GenerateJSONResponse, ImageFormat

router = APIRouter(tags=["generation"])

DEFAULT_N = 16
_MEDIA_TYPES = {
    ImageFormat.png: "image/png",
    ImageFormat.npy: "application/x-npy",
    ImageFormat.zip: "application/zip",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 422, 500, 503, 504)
}


@dataclass(frozen=True)
class _Images:
    images: np.ndarray
    latents: np.ndarray
    seeds: list[int] | None


@router.post(
    "/generate",
    responses={
        200: {
            "content": {"image/png": {}, "application/x-npy": {}, "application/zip": {}},
            "model": GenerateJSONResponse,
        },
        **_ERRORS,
    },
)
async def generate(
    http_request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    generation: GenerationDep,
    model: Annotated[str | None, Query(description="Model name; the default model when absent.")] = None,
    version: Annotated[str | None, Query(description="Version number or 'latest'.")] = None,
    n: Annotated[int | None, Query(description="Number of images (1..GENSERVE_MAX_N, default 16).")] = None,
    seed: Annotated[int | None, Query(description="Seed of the first image; image i uses seed+i.")] = None,
    truncation: Annotated[float | None, Query(description="Truncation psi in (0, 1]; 1 = none.")] = None,
    label: Annotated[
        str | None,
        Query(
            description="Class name or index, for conditional models; without it image i gets class "
            "i % num_classes (the first image class 0, the next class 1, ...)."
        ),
    ] = None,
    cols: Annotated[int | None, Query(description="Grid columns for format=png.")] = None,
    format: Annotated[ImageFormat | None, Query(description="png (grid, default), json, npy or zip.")] = None,
    include_latents: Annotated[bool | None, Query(description="With format=json, add each latent.")] = None,
    body: Annotated[GenerateBody | None, Body(description="The same fields, plus `latents`.")] = None,
) -> Response:
    """Generate images; each image's latent comes from its own seed, so a seed always gives the same image.

    Fields may come in the query or in a JSON body; the body wins where both are given.
    """
    query = GenerateBody(
        model=model,
        version=version,
        n=n,
        seed=seed,
        truncation=truncation,
        label=label,
        cols=cols,
        format=format,
        include_latents=include_latents,
    )
    request = _merge(query, body)
    model_version = registry.resolve(
        params.parse_model_name(request.model), params.parse_version(request.version)
    )
    result = await _generate_images(request, model_version, generation, settings.max_n, http_request)
    headers = _headers(model_version, result.seeds)
    chosen = request.format or ImageFormat.png
    if chosen is ImageFormat.json:
        payload = await generation.encode(
            model_version, chosen.value, _json_payload, model_version, result, bool(request.include_latents)
        )
        return JSONResponse(payload, headers=headers)
    content = await generation.encode(model_version, chosen.value, _encode, chosen, result, request.cols)
    return Response(content, media_type=_MEDIA_TYPES[chosen], headers=headers)


def _merge(query: GenerateBody, body: GenerateBody | None) -> GenerateBody:
    if body is None:
        return query
    given = body.model_dump(exclude_none=True)
    return query.model_copy(update=given)


async def _generate_images(
    request: GenerateBody,
    model_version: ModelVersion,
    generation: GenerationService,
    max_n: int,
    http_request: Request,
) -> _Images:
    metadata = model_version.metadata
    psi = params.check_truncation(request.truncation)
    if request.cols is not None:
        params.check_range("cols", request.cols, 1, max_n)
    seeds: list[int] | None
    if request.latents is not None:
        if request.seed is not None:
            raise InvalidParameter("seed", "give either seed or latents, not both")
        latents = params.check_latents(request.latents, metadata.latent_dim, max_n)
        if request.n is not None and request.n != len(latents):
            raise InvalidParameter("n", f"is {request.n} but {len(latents)} latents were given")
        seeds = None
    else:
        count = params.check_range("n", DEFAULT_N if request.n is None else request.n, 1, max_n)
        seeds = params.seed_range(request.seed, count)
        latents = await generation.latents_for_seeds(seeds, metadata.latent_dim)
    labels = params.labels_for(metadata, request.label, len(latents))
    latents = truncate(latents, psi)
    images = await generation.generate(model_version, latents, labels, request=http_request)
    return _Images(images=images, latents=latents, seeds=seeds)


def _headers(model_version: ModelVersion, seeds: list[int] | None) -> dict[str, str]:
    headers = {"X-Model": model_version.name, "X-Model-Version": str(model_version.version)}
    if seeds:
        headers["X-Seeds"] = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return headers


def _names(result: _Images) -> list[str]:
    if result.seeds is not None:
        return [f"seed{seed:010d}.png" for seed in result.seeds]
    return [f"latent{index:04d}.png" for index in range(len(result.images))]


def _encode(chosen: ImageFormat, result: _Images, cols: int | None) -> bytes:
    if chosen is ImageFormat.npy:
        return imaging.encode_npy(result.images)
    if chosen is ImageFormat.zip:
        return imaging.encode_zip(result.images, _names(result))
    return imaging.encode_grid_png(result.images, cols)


def _json_payload(model_version: ModelVersion, result: _Images, include_latents: bool) -> dict[str, Any]:
    height, width, channels = result.images.shape[1:]
    encoded = imaging.encode_png_list_base64(result.images)
    seeds: list[int | None] = list(result.seeds) if result.seeds is not None else [None] * len(encoded)
    images = [
        {
            "seed": seed,
            "png_base64": png,
            "latent": result.latents[index].tolist() if include_latents else None,
        }
        for index, (seed, png) in enumerate(zip(seeds, encoded, strict=True))
    ]
    response = GenerateJSONResponse.model_validate(
        {
            "model": model_version.name,
            "version": model_version.version,
            "width": width,
            "height": height,
            "channels": channels,
            "images": images,
        }
    )
    return response.model_dump(mode="json", exclude_none=True)
