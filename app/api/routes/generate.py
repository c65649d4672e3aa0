"""POST /generate: images from seeds or explicit latents, as a PNG grid, JSON, .npy or .zip; text from a
text generator; sound from a sound generator: the version's servable decides what the fields mean."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from app.api import params
from app.api.deps import RegistryDep
from app.api.openapi import (
    AUDIO_FILES,
    IMAGE_FILES,
    TEXT_FILES,
    error_responses,
    file_responses,
    parse_query,
    query_parameters,
)
from app.api.schemas import (
    GenerateAudioJSONResponse,
    GenerateBody,
    GenerateJSONResponse,
    GenerateQuery,
    GenerateTextResponse,
)

router = APIRouter(tags=["generation"])


async def _generate_query(request: Request) -> GenerateQuery:
    """The query fields, validated at once (see `parse_query`), documented by the route's `openapi_extra`."""
    return parse_query(GenerateQuery, request)


@router.post(
    "/generate",
    responses={
        **file_responses(
            GenerateJSONResponse | GenerateTextResponse | GenerateAudioJSONResponse,
            IMAGE_FILES + TEXT_FILES + AUDIO_FILES,
        ),
        **error_responses(404, 422, 500, 503, 504),
    },
    openapi_extra={"parameters": query_parameters(GenerateQuery)},
)
async def generate(
    http_request: Request,
    registry: RegistryDep,
    query: Annotated[GenerateQuery, Depends(_generate_query)],
    body: Annotated[GenerateBody | None, Body(description="The same fields, plus `latents`.")] = None,
) -> Response:
    """Generate images (or text, or sound); each image's or clip's latent, and each text sequence's sampling,
    comes from its own seed, so a seed always gives the same result.

    Fields may come in the query or in a JSON body; the body wins where both are given.
    """
    fields = _merge(GenerateBody.model_construct(**query.model_dump()), body)
    model_version = registry.resolve(
        params.parse_model_name(fields.model), params.parse_version(fields.version)
    )
    return await model_version.serving.kind.generate(model_version, fields, http_request)


def _merge(query: GenerateBody, body: GenerateBody | None) -> GenerateBody:
    if body is None:
        return query
    given = body.model_dump(exclude_none=True)
    return query.model_copy(update=given)
