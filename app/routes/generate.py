"""POST /generate: images from seeds or explicit latents, as a PNG grid, JSON, .npy or .zip."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response

from app import params
from app.deps import GenerationDep, RegistryDep, RendererDep, SettingsDep
from app.errors import InvalidParameter
from app.generation import ImageRequest
from app.rendering import GeneratedView
from app.routes.openapi import ModelQuery, VersionQuery, error_responses
from app.schemas import GenerateBody, GenerateJSONResponse, ImageFormat

router = APIRouter(tags=["generation"])

DEFAULT_N = 16


@router.post(
    "/generate",
    responses={
        200: {
            "content": {"image/png": {}, "application/x-npy": {}, "application/zip": {}},
            "model": GenerateJSONResponse,
        },
        **error_responses(404, 422, 500, 503, 504),
    },
)
async def generate(
    http_request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    generation: GenerationDep,
    renderer: RendererDep,
    model: ModelQuery = None,
    version: VersionQuery = None,
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
    fields = _merge(query, body)
    image_request = _image_request(fields, settings.max_n)
    model_version = registry.resolve(
        params.parse_model_name(fields.model), params.parse_version(fields.version)
    )
    result = await generation.images(model_version, image_request, http_request=http_request)
    view = GeneratedView(result, cols=fields.cols, include_latents=bool(fields.include_latents))
    return await renderer.render(view, (fields.format or ImageFormat.png).value)


def _merge(query: GenerateBody, body: GenerateBody | None) -> GenerateBody:
    if body is None:
        return query
    given = body.model_dump(exclude_none=True)
    return query.model_copy(update=given)


def _image_request(fields: GenerateBody, max_n: int) -> ImageRequest:
    """The images asked for: the model-independent checks, before the model is resolved."""
    psi = params.check_truncation(fields.truncation)
    if fields.cols is not None:
        params.check_range("cols", fields.cols, 1, max_n)
    if fields.latents is None:
        count = params.check_range("n", DEFAULT_N if fields.n is None else fields.n, 1, max_n)
        return ImageRequest(seeds=params.seed_range(fields.seed, count), truncation=psi, label=fields.label)
    if fields.seed is not None:
        raise InvalidParameter("seed", "give either seed or latents, not both")
    latents = params.parse_latents(fields.latents, max_n)
    if fields.n is not None and fields.n != len(latents):
        raise InvalidParameter("n", f"is {fields.n} but {len(latents)} latents were given")
    return ImageRequest(latents=latents, truncation=psi, label=fields.label)
