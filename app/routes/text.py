"""POST /generate for text generators: fields to a `TextRequest`, then JSON, plain text or server-sent events.

`routes/generate.py` hands a request here when the model it names generates text; image-only fields on a text
model, and text-only fields on an image model, are a 422 naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from app import params
from app.config import Settings
from app.errors import InvalidParameter, ServiceError
from app.registry import ModelRegistry, ModelVersion
from app.rendering import model_headers
from app.schemas import GenerateBody, GenerateFormat, GenerateTextResponse, TextCompletion
from app.text_batching import Sampling
from app.text_generation import GeneratedText, TextGenerationService, TextRequest, TextStream

DEFAULT_MAX_NEW_TOKENS = 128
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 100.0
TEXT_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "stop", "stream")
IMAGE_FIELDS = ("truncation", "label", "cols", "include_latents", "latents")
_TEXT_FORMATS = (GenerateFormat.json, GenerateFormat.text)


async def get_text_generation(request: Request) -> TextGenerationService:
    service: TextGenerationService = request.app.state.text_generation
    return service


TextGenerationDep = Annotated[TextGenerationService, Depends(get_text_generation)]


def text_model_version(registry: ModelRegistry, fields: GenerateBody) -> ModelVersion | None:
    """The version a request resolves to when it is a text generator; None otherwise (the image path reports
    any resolution error, as it always has)."""
    try:
        model_version = registry.resolve(
            params.parse_model_name(fields.model), params.parse_version(fields.version), allow_text=True
        )
    except ServiceError:
        return None
    return model_version if model_version.text_runtime is not None else None


def refuse_text_fields(fields: GenerateBody, model_version: ModelVersion) -> None:
    """422 for text-only fields (or format=text) sent to an image generator."""
    for name in TEXT_FIELDS:
        if getattr(fields, name) is not None:
            raise InvalidParameter(name, f"is for text generators; {model_version.name!r} generates images")
    if fields.format is GenerateFormat.text:
        raise InvalidParameter(
            "format", f"text is for text generators; {model_version.name!r} generates images"
        )


def text_request(fields: GenerateBody, settings: Settings, model_version: ModelVersion) -> TextRequest:
    """The model-aware checks of a text request; each failure is a 422 naming its field."""
    for name in IMAGE_FIELDS:
        if getattr(fields, name) is not None:
            raise InvalidParameter(name, f"is for image generators; {model_version.name!r} generates text")
    if fields.format is not None and fields.format not in _TEXT_FORMATS:
        raise InvalidParameter(
            "format", f"must be json or text for a text generator, got {fields.format.value}"
        )
    prompt = fields.prompt or ""
    if len(prompt) > settings.max_prompt_chars:
        raise InvalidParameter(
            "prompt", f"must be at most {settings.max_prompt_chars} characters, got {len(prompt)}"
        )
    count = params.check_range("n", 1 if fields.n is None else fields.n, 1, settings.max_n)
    default_tokens = min(DEFAULT_MAX_NEW_TOKENS, settings.max_new_tokens)
    max_new_tokens = params.check_range(
        "max_new_tokens",
        default_tokens if fields.max_new_tokens is None else fields.max_new_tokens,
        1,
        settings.max_new_tokens,
    )
    return TextRequest(
        prompt=prompt,
        seeds=params.seed_range(fields.seed, count),
        sampling=Sampling(
            max_new_tokens=max_new_tokens,
            temperature=_temperature(fields.temperature),
            top_k=_top_k(fields.top_k, model_version),
            top_p=_top_p(fields.top_p),
            stop=_stop(fields.stop),
        ),
    )


async def generate_text(
    fields: GenerateBody,
    model_version: ModelVersion,
    settings: Settings,
    service: TextGenerationService,
    http_request: Request,
) -> Response:
    request = text_request(fields, settings, model_version)
    stream = service.start(model_version, request, http_request=http_request)
    headers = {**model_headers(model_version), "X-Seeds": _seeds_header(request.seeds)}
    if fields.stream:
        return StreamingResponse(_events(stream), media_type="text/event-stream", headers=headers)
    result = await service.complete(stream, http_request=http_request)
    if fields.format is GenerateFormat.text:
        return Response(
            "\n".join(c.text for c in result.completions),
            media_type="text/plain; charset=utf-8",
            headers=headers,
        )
    return JSONResponse(_json(result).model_dump(mode="json"), headers=headers)


def _json(result: GeneratedText) -> GenerateTextResponse:
    return GenerateTextResponse(
        model=result.model_version.name,
        version=result.model_version.version,
        prompt=result.prompt,
        completions=[
            TextCompletion(
                index=c.index, seed=c.seed, text=c.text, finish_reason=c.finish_reason, tokens=c.tokens
            )
            for c in result.completions
        ],
    )


async def _events(stream: TextStream) -> AsyncIterator[str]:
    """Server-sent events: `token` per piece of new text, `finish` per sequence, then `done` (or `error`)."""
    texts = ["" for _ in stream.request.seeds]
    try:
        async for event in stream.events():
            texts[event.index] += event.text
            if event.finish_reason is None:
                yield _sse("token", {"index": event.index, "text": event.text})
            else:
                payload = {
                    "index": event.index,
                    "finish_reason": event.finish_reason,
                    "text": texts[event.index],
                }
                yield _sse("finish", payload)
        yield _sse("done", {"model": stream.model_version.name, "version": stream.model_version.version})
    except ServiceError as error:
        yield _sse("error", {"error": {"code": error.code, "message": error.message}})
    finally:
        stream.cancel()


def _sse(event: str, data: dict[str, object]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _seeds_header(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _temperature(value: float | None) -> float:
    if value is None:
        return 1.0
    if not (math.isfinite(value) and 0.0 <= value <= MAX_TEMPERATURE):
        raise InvalidParameter(
            "temperature", f"must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {value}"
        )
    return float(value)


def _top_k(value: int | None, model_version: ModelVersion) -> int | None:
    if value is None:
        return None
    runtime = model_version.text_runtime
    size = runtime.vocabulary_size if runtime is not None else value
    return params.check_range("top_k", value, 1, size)


def _top_p(value: float | None) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise InvalidParameter("top_p", f"must be in (0, 1], got {value}")
    return float(value)


def _stop(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return ()
    if len(values) > MAX_STOP_SEQUENCES:
        raise InvalidParameter("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(values)}")
    for value in values:
        if not 1 <= len(value) <= MAX_STOP_CHARS:
            raise InvalidParameter("stop", f"each stop sequence must be 1-{MAX_STOP_CHARS} characters")
    return tuple(values)
