"""POST /generate: images from seeds or explicit latents, as a PNG grid, JSON, .npy or .zip; text from a
text generator (see `routes/text.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from app import params
from app.deps import GenerateServicesDep
from app.errors import InvalidParameter
from app.generation import ImageRequest
from app.rendering import GeneratedView
from app.routes import text
from app.routes.openapi import error_responses, parse_query, query_parameters
from app.schemas import (
    GenerateBody,
    GenerateFormat,
    GenerateJSONResponse,
    GenerateQuery,
    GenerateTextResponse,
)

router = APIRouter(tags=["generation"])

DEFAULT_N = 16


async def _generate_query(request: Request) -> GenerateQuery:
    """The query fields, validated at once (see `parse_query`), documented by the route's `openapi_extra`."""
    return parse_query(GenerateQuery, request)


@router.post(
    "/generate",
    responses={
        200: {
            "content": {
                "image/png": {},
                "application/x-npy": {},
                "application/zip": {},
                "text/plain": {},
                "text/event-stream": {},
            },
            "model": GenerateJSONResponse | GenerateTextResponse,
        },
        **error_responses(404, 422, 500, 503, 504),
    },
    openapi_extra={"parameters": query_parameters(GenerateQuery)},
)
async def generate(
    http_request: Request,
    services: GenerateServicesDep,
    query: Annotated[GenerateQuery, Depends(_generate_query)],
    body: Annotated[GenerateBody | None, Body(description="The same fields, plus `latents`.")] = None,
) -> Response:
    """Generate images (or text); each image's latent, and each text sequence's sampling, comes from its own
    seed, so a seed always gives the same result.

    Fields may come in the query or in a JSON body; the body wins where both are given.
    """
    fields = _merge(GenerateBody.model_construct(**query.model_dump()), body)
    registry, settings = services.registry, services.settings
    text_version = text.text_model_version(registry, fields)
    if text_version is not None:
        return await text.generate_text(
            fields, text_version, settings, services.text_generation, http_request
        )
    image_request = _image_request(fields, settings.max_n)
    model_version = registry.resolve(
        params.parse_model_name(fields.model), params.parse_version(fields.version)
    )
    text.refuse_text_fields(fields, model_version)
    result = await services.generation.images(model_version, image_request, http_request=http_request)
    view = GeneratedView(result, cols=fields.cols, include_latents=bool(fields.include_latents))
    return await services.renderer.render(view, (fields.format or GenerateFormat.png).value)


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
