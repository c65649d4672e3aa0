"""Text generators as a kind of model: loading them, their continuous batchers, and what they answer.

`TextKind` loads the versions whose metadata describes a text generator and answers, for its servables,
`POST /generate` (JSON, plain text or server-sent events) and the inference protocols (one sequence per
`prompt` row, each row checked as `POST /generate` checks a text request).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from app.api.headers import model_headers, seeds_header
from app.api.schemas import GenerateBody, GenerateFormat, GenerateTextResponse, TextCompletion
from app.config import Settings
from app.metrics import Metrics
from app.server.errors import InvalidParameter, ServiceError
from app.serving.registry import ModelVersion
from app.serving.runtime import DeviceInfo
from app.serving.servable import CallContext, Tensors
from app.text.batching import TextBatcher, TextBatchingConfig
from app.text.generation import GeneratedText, TextGenerationService, TextStream
from app.text.params import check_rows_tokens, text_request
from app.text.runtime import TextRuntime
from app.text.servable import TextServable
from genserve import store
from genserve.signatures import string_array
from genserve.store import ModelMetadata


class TextKind:
    """Loads text generators and serves them through the text generation service."""

    def __init__(self, settings: Settings, metrics: Metrics, generation: TextGenerationService) -> None:
        self.settings = settings
        self.metrics = metrics
        self.generation = generation

    def serves(self, metadata: ModelMetadata) -> bool:
        return metadata.is_text

    def load(self, path: Path, device: DeviceInfo) -> TextServable:
        runtime = TextRuntime(path, device)
        runtime.warm_up(self.settings.warmup_batch_sizes)
        return TextServable(runtime, self)

    def batcher(self, name: str, version: int, runtime: TextRuntime) -> TextBatcher:
        config = TextBatchingConfig(
            max_active_sequences=self.settings.max_active_sequences,
            max_queued_sequences=self.settings.max_queued_sequences,
            prefill_chunk_tokens=self.settings.prefill_chunk_tokens,
            prompt_cache_bytes=self.settings.prompt_cache_bytes,
        )
        return TextBatcher(
            runtime, config, name=f"{name}:{version}", observer=self.metrics.text_observer(name, version)
        )

    async def generate(
        self, model_version: ModelVersion, fields: GenerateBody, http_request: Request
    ) -> Response:
        """`POST /generate` for a text generator: JSON, plain text or server-sent events."""
        service = self.generation
        request = text_request(fields, self.settings, model_version)
        stream = service.start(model_version, request, http_request=http_request)
        headers = {**model_headers(model_version), **seeds_header(request.seeds)}
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

    async def infer(self, model_version: ModelVersion, inputs: Tensors, call: CallContext) -> Tensors:
        """One sequence per row, all in the same continuous batcher."""
        rows = range(len(inputs[store.PROMPT_INPUT]))
        settings = self.settings
        requests = [text_request(_generate_fields(inputs, row), settings, model_version) for row in rows]
        check_rows_tokens(requests, settings.max_text_request_tokens)
        results = await self.generation.generate_all(
            model_version, requests, timeout_s=call.timeout_s, http_request=call.http_request
        )
        return {store.TEXT_OUTPUT: string_array([result.completions[0].text.encode() for result in results])}


def _generate_fields(inputs: dict[str, np.ndarray], row: int) -> GenerateBody:
    """Row `row` as the fields of a text `POST /generate` with n = 1; absent inputs take that route's defaults."""
    values = {name: array[row].item() for name, array in inputs.items() if name != store.PROMPT_INPUT}
    temperature = inputs.get(store.TEMPERATURE_INPUT)
    if temperature is not None:
        # The float32 nearest 0.7 stands for the 0.7 the client meant: its shortest decimal, as /generate reads it.
        values[store.TEMPERATURE_INPUT] = float(str(temperature[row]))
    return GenerateBody(prompt=_utf8(inputs[store.PROMPT_INPUT][row]), **values)


def _utf8(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidParameter(store.PROMPT_INPUT, "must be UTF-8 text") from None


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
