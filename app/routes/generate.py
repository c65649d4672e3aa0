"""POST /generate: images from seeds or explicit latents, as a PNG grid, JSON, .npy or .zip; text from a
text generator (see `routes/text.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response

from app import params
from app.deps import GenerationDep, RegistryDep, RendererDep, SettingsDep, TextGenerationDep
from app.errors import InvalidParameter
from app.generation import ImageRequest
from app.rendering import GeneratedView
from app.routes import text
from app.routes.openapi import ModelQuery, VersionQuery, error_responses
from app.schemas import GenerateBody, GenerateFormat, GenerateJSONResponse, GenerateTextResponse

router = APIRouter(tags=["generation"])

DEFAULT_N = 16


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
)
async def generate(
    http_request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    generation: GenerationDep,
    renderer: RendererDep,
    text_generation: TextGenerationDep,
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
    format: Annotated[
        GenerateFormat | None,
        Query(description="png (grid, default), json, npy or zip; text models: json (default) or text."),
    ] = None,
    include_latents: Annotated[bool | None, Query(description="With format=json, add each latent.")] = None,
    prompt: Annotated[str | None, Query(description="Text models: the text to continue.")] = None,
    max_new_tokens: Annotated[
        int | None, Query(description="Text models: most tokens per sequence (1..GENSERVE_MAX_NEW_TOKENS).")
    ] = None,
    temperature: Annotated[
        float | None, Query(description="Text models: 0 is greedy, 1 (default) as learnt.")
    ] = None,
    top_k: Annotated[
        int | None, Query(description="Text models: sample among the k likeliest tokens.")
    ] = None,
    top_p: Annotated[
        float | None, Query(description="Text models: sample within this probability mass.")
    ] = None,
    stop: Annotated[
        list[str] | None, Query(description="Text models: stop sequences (repeat the field).")
    ] = None,
    stream: Annotated[
        bool | None, Query(description="Text models: server-sent events, one per token.")
    ] = None,
    body: Annotated[GenerateBody | None, Body(description="The same fields, plus `latents`.")] = None,
) -> Response:
    """Generate images (or text); each image's latent, and each text sequence's sampling, comes from its own
    seed, so a seed always gives the same result.

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
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop=stop,
        stream=stream,
    )
    fields = _merge(query, body)
    text_version = text.text_model_version(registry, fields)
    if text_version is not None:
        return await text.generate_text(fields, text_version, settings, text_generation, http_request)
    image_request = _image_request(fields, settings.max_n)
    model_version = registry.resolve(
        params.parse_model_name(fields.model), params.parse_version(fields.version)
    )
    text.refuse_text_fields(fields, model_version)
    result = await generation.images(model_version, image_request, http_request=http_request)
    view = GeneratedView(result, cols=fields.cols, include_latents=bool(fields.include_latents))
    return await renderer.render(view, (fields.format or GenerateFormat.png).value)


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
