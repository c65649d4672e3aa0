"""The completions API's handler: OpenAI's fields to text requests, run by the text generation service, and its
answers back in OpenAI's shape (JSON, or server-sent events ending with `data: [DONE]`).

Each prompt is checked and generated as `POST /generate` checks and generates a text request with the same
fields (`max_tokens` is its `max_new_tokens`, and the defaults and limits are `app.text.params`'s), through the
same `TextGenerationService`, continuous batcher and metrics. Prompt p's n choices are choices p*n ... p*n+n-1
and use seeds seed, seed+1, ..., seed+n-1, so each prompt's choices are exactly what `/generate` writes for that
prompt with that seed. Tokens are characters: `usage` counts the prompts' characters once each and the
characters every choice generated (a stop sequence included, as `/generate`'s `tokens`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.requests import Request

from app.api import params
from app.api.headers import model_headers
from app.api.schemas import GenerateBody
from app.config import Settings
from app.protocols.openai.errors import error_body
from app.protocols.openai.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    ModelCard,
    ModelList,
    Usage,
)
from app.server.errors import InvalidParameter, ModelNotFound, ServiceError
from app.serving.registry import ModelRegistry, ModelVersion
from app.text.batching import FINISH_END_OF_TEXT, FINISH_LENGTH, FINISH_STOP, TokenEvent
from app.text.generation import GeneratedText, TextGenerationService, TextRequest, TextStream
from app.text.params import text_request
from app.text.servable import GENERATE_TEXT

OWNER = "genserve"
# The end-of-text token and a stop sequence both end a choice as OpenAI's "stop" does.
_FINISH_REASONS: dict[str, FinishReason] = {
    FINISH_LENGTH: "length",
    FINISH_STOP: "stop",
    FINISH_END_OF_TEXT: "stop",
}


@dataclass(frozen=True)
class _Answer:
    """What every JSON answer or chunk of one completion repeats."""

    id: str
    created: int
    model: str

    def body(self, choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionResponse:
        return CompletionResponse(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )


class Completions:
    """OpenAI's completions and models, over the registry and the text generation service."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, generation: TextGenerationService
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._generation = generation

    def models(self) -> ModelList:
        """The text models with a version serving, by name."""
        cards = []
        for entry in self._registry.entries:
            latest = entry.latest_available()
            if latest is not None and latest.servable and GENERATE_TEXT in latest.servable.capabilities:
                cards.append(_card(entry.name, latest))
        return ModelList(data=cards)

    def model(self, model_id: str) -> ModelCard:
        """One text model, by name or `name:version`; 404 for any other, as the list leaves it out."""
        try:
            return _card(model_id, self._resolve(model_id))
        except InvalidParameter as error:
            raise ModelNotFound(f"{params.shown(model_id)} is not a text model ({error.message})") from None

    async def create(self, request: CompletionRequest, http_request: Request) -> Response:
        """The request's choices: as JSON once all are written, or as server-sent events while they are."""
        _refuse_unsupported(request)
        model_version = self._resolve(request.model)
        requests = self._text_requests(request, model_version)
        answer = _Answer(
            f"cmpl-{uuid.uuid4().hex}", int(time.time()), f"{model_version.name}:{model_version.version}"
        )
        headers = model_headers(model_version)
        if request.stream:
            streams = self._generation.start_all(model_version, requests, http_request=http_request)
            usage = request.stream_options is not None and request.stream_options.include_usage
            events = _events(answer, streams, include_usage=usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        results = await self._generation.generate_all(model_version, requests, http_request=http_request)
        return JSONResponse(_completed(answer, results).model_dump(mode="json"), headers=headers)

    def _resolve(self, model_id: str) -> ModelVersion:
        """The version `name` (its newest) or `name:version` (a number, label or `latest`) names; 404 when
        there is none, 400 naming `model` when it does not write text."""
        name, _, selector = model_id.partition(":")
        try:
            version = params.parse_version(selector) if selector else None
        except InvalidParameter:
            raise InvalidParameter(
                "model", f"must be a name or name:version (a number or label), got {params.shown(model_id)}"
            ) from None
        return self._registry.resolve(params.parse_model_name(name), version, capability=GENERATE_TEXT)

    def _text_requests(self, request: CompletionRequest, model_version: ModelVersion) -> list[TextRequest]:
        """One text request per prompt, each checked as `POST /generate` checks it; then the limits of the
        request as a whole (choices, token budget)."""
        settings, prompts = self._settings, request.prompts
        if len(prompts) > settings.max_n:
            raise InvalidParameter("prompt", f"at most {settings.max_n} prompts, got {len(prompts)}")
        requests = [
            text_request(_generate_fields(request, prompt), settings, model_version) for prompt in prompts
        ]
        choices = sum(len(each.seeds) for each in requests)
        if choices > settings.max_n:
            raise InvalidParameter(
                "n",
                f"{len(prompts)} prompts × n = {choices} choices, over the limit of {settings.max_n} "
                "(GENSERVE_MAX_N); send fewer prompts or ask for fewer choices",
            )
        tokens = sum(len(each.seeds) * (len(each.prompt) + each.sampling.max_new_tokens) for each in requests)
        if tokens > settings.max_text_request_tokens:
            raise InvalidParameter(
                "prompt",
                f"the {len(prompts)} prompts' n × (prompt length + max_tokens) add up to {tokens} tokens, over "
                f"the limit of {settings.max_text_request_tokens} per request "
                "(GENSERVE_MAX_TEXT_REQUEST_TOKENS); send fewer or shorter prompts, or ask for fewer tokens",
            )
        return requests


def _generate_fields(request: CompletionRequest, prompt: str) -> GenerateBody:
    """One prompt of the request as the fields of a text `POST /generate`."""
    return GenerateBody(
        prompt=prompt,
        n=request.n,
        seed=request.seed,
        max_new_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stops,
    )


def _refuse_unsupported(request: CompletionRequest) -> None:
    """A 400 naming the first OpenAI field whose value asks for more than plain sampling."""
    if request.echo:
        raise InvalidParameter("echo", "true is not supported: the text never repeats the prompt")
    if request.best_of not in (None, 1):
        raise InvalidParameter("best_of", "is not supported: ask for n choices instead")
    if request.logprobs is not None:
        raise InvalidParameter("logprobs", "is not supported")
    if request.suffix:
        raise InvalidParameter("suffix", "is not supported: the models only continue a prompt")
    if request.logit_bias:
        raise InvalidParameter("logit_bias", "is not supported: send null or {}")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise InvalidParameter(name, "is not supported: send 0 or leave it out")


def _card(model_id: str, model_version: ModelVersion) -> ModelCard:
    return ModelCard(id=model_id, created=_timestamp(model_version.metadata.created), owned_by=OWNER)


def _timestamp(created: str) -> int:
    """Unix seconds of a version's ISO 8601 `created`; 0 when it cannot be read."""
    try:
        return int(datetime.fromisoformat(created).timestamp())
    except ValueError:
        return 0


def _completed(answer: _Answer, results: list[GeneratedText]) -> CompletionResponse:
    completions = [completion for result in results for completion in result.completions]
    choices = [
        CompletionChoice(
            index=index, text=completion.text, finish_reason=_FINISH_REASONS[completion.finish_reason]
        )
        for index, completion in enumerate(completions)
    ]
    prompt_tokens = sum(len(result.prompt) for result in results)
    return answer.body(choices, _usage(prompt_tokens, sum(completion.tokens for completion in completions)))


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


async def _events(answer: _Answer, streams: list[TextStream], *, include_usage: bool) -> AsyncIterator[str]:
    """A chunk per piece of new text and one with each choice's finish reason; with `include_usage`, a last
    chunk with no choices and the usage; an error as `data: {"error": ...}`; then `data: [DONE]`."""
    offsets = [0]
    for stream in streams:
        offsets.append(offsets[-1] + len(stream.request.seeds))
    try:
        async for position, event in _merged(streams):
            reason = None if event.finish_reason is None else _FINISH_REASONS[event.finish_reason]
            choice = CompletionChoice(
                index=offsets[position] + event.index, text=event.text, finish_reason=reason
            )
            yield _data(answer.body([choice]))
        if include_usage:
            generated = sum(len(sequence.generated) for stream in streams for sequence in stream.sequences)
            prompt_tokens = sum(len(stream.request.prompt) for stream in streams)
            yield _data(answer.body([], _usage(prompt_tokens, generated)))
    except ServiceError as error:
        yield _data(error_body(error))
    finally:
        for stream in streams:
            stream.cancel()
    yield "data: [DONE]\n\n"


def _data(body: BaseModel) -> str:
    return f"data: {body.model_dump_json()}\n\n"


async def _merged(streams: list[TextStream]) -> AsyncIterator[tuple[int, TokenEvent]]:
    """The events of several streams as they arrive, each with its stream's position; each stream's own events
    keep their order. The first error raised by a stream is raised here."""
    sources = [stream.events() for stream in streams]
    waiting: dict[asyncio.Future[TokenEvent], int] = {}
    try:
        waiting = {asyncio.ensure_future(anext(source)): position for position, source in enumerate(sources)}
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for future in sorted(done, key=waiting.__getitem__):
                position = waiting.pop(future)
                try:
                    event = future.result()
                except StopAsyncIteration:
                    continue
                yield position, event
                waiting[asyncio.ensure_future(anext(sources[position]))] = position
    finally:
        # Cancelling a stream's pending read ends its events (and the stream); a read that already failed is
        # looked at, so asyncio does not report its error as never retrieved.
        for future in waiting:
            if not future.cancel() and not future.cancelled():
                future.exception()
