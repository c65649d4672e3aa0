"""POST /generate for text generators: fields to a `TextRequest`, then JSON, plain text or server-sent events.

`routes/generate.py` hands a request here when the model it names generates text; image-only fields on a text
model, and text-only fields on an image model, are a 422 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from app import params
from app.config import Settings
from app.errors import InvalidParameter, ServiceError
from app.registry import ModelRegistry, ModelVersion
from app.rendering import model_headers
from app.schemas import GenerateBody, GenerateFormat, GenerateTextResponse, TextCompletion
from app.text_generation import GeneratedText, TextGenerationService, TextStream
from app.text_params import TEXT_FIELDS, text_request


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
