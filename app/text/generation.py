"""The text pipeline: a parsed request to sequences in a text model version's continuous batcher.

The route parses fields into a `TextRequest`, resolves the version and calls `TextGenerationService.start`,
which checks the prompt against the model's vocabulary, charges n × max_new_tokens to the client's quota and
queues one sequence per seed; the returned `TextStream` yields token events (for ``stream=true``) or collects them
into a `GeneratedText`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from opentelemetry.trace import Span
from starlette.requests import Request

from app.api import params
from app.metrics import Metrics
from app.server import tracing
from app.server.disconnect import cancel_on_disconnect
from app.server.errors import InvalidParameter, ShuttingDown
from app.server.quotas import TOKENS, Quotas
from app.server.shutdown import admitted
from app.serving.registry import ModelRegistry, ModelVersion
from app.text.batching import Sampling, TextJob, TextSequence, TokenEvent
from app.text.runtime import TextRuntime
from app.text.servable import text_servable
from genserve.text import context_ids, unknown_characters


@dataclass(frozen=True)
class TextRequest:
    """What to write: a prompt continued once per seed (sequence i uses seeds[i]), and how to sample."""

    prompt: str
    seeds: list[int]
    sampling: Sampling


@dataclass(frozen=True)
class Completion:
    index: int
    seed: int
    text: str
    finish_reason: str
    tokens: int


@dataclass(frozen=True)
class GeneratedText:
    model_version: ModelVersion
    prompt: str
    completions: list[Completion]


class TextStream:
    """One request's sequences in flight: iterate `events()`, or `collect()` them all."""

    def __init__(
        self, model_version: ModelVersion, request: TextRequest, job: TextJob, span: Span | None = None
    ) -> None:
        self.model_version = model_version
        self.request = request
        self._job = job
        self._span = span  # `text generate`, ended when its sequences are

    @property
    def sequences(self) -> list[TextSequence]:
        """Its sequences' progress, in order."""
        return self._job.sequences

    def events(self) -> AsyncIterator[TokenEvent]:
        return self._job.events() if self._span is None else self._traced_events()

    def cancel(self) -> None:
        self._job.cancel()
        self._end_span()

    async def _traced_events(self) -> AsyncIterator[TokenEvent]:
        try:
            async for event in self._job.events():
                yield event
        finally:
            self._end_span()

    def _end_span(self) -> None:
        tracing.close(self._span, tokens=sum(len(seq.generated) for seq in self.sequences))

    async def collect(self) -> GeneratedText:
        texts = ["" for _ in self.request.seeds]
        reasons = ["" for _ in self.request.seeds]
        async for event in self.events():
            texts[event.index] += event.text
            reasons[event.index] = event.finish_reason or reasons[event.index]
        completions = [
            Completion(seq.index, seed, texts[seq.index], reasons[seq.index], len(seq.generated))
            for seq, seed in zip(self.sequences, self.request.seeds, strict=True)
        ]
        return GeneratedText(self.model_version, self.request.prompt, completions)


class TextGenerationService:
    """The one path from text requests to sequences in a continuous batcher."""

    def __init__(
        self,
        request_timeout_s: float,
        metrics: Metrics,
        registry: ModelRegistry,
        quotas: Quotas | None = None,
    ) -> None:
        """`quotas` charges each request's tokens to its client's key (none: no quotas)."""
        self.request_timeout_s = request_timeout_s
        self._metrics = metrics
        self._registry = registry
        self._quotas = quotas if quotas is not None else Quotas({})

    def start(
        self,
        model_version: ModelVersion,
        request: TextRequest,
        *,
        http_request: Request | None = None,
        timeout_s: float | None = None,
    ) -> TextStream:
        """Queue the request's sequences (503 when full or draining, 422 for characters the model never saw, 429
        over its key's quota); `timeout_s` shortens the request deadline when the caller has less time left."""
        [stream] = self.start_all(model_version, [request], http_request=http_request, timeout_s=timeout_s)
        return stream

    def start_all(
        self,
        model_version: ModelVersion,
        requests: list[TextRequest],
        *,
        http_request: Request | None = None,
        timeout_s: float | None = None,
    ) -> list[TextStream]:
        """Every request's sequences queued, or none: when one cannot start (full, draining, an unknown
        character, over the key's quota), the sequences of those already queued are dropped and its error raised.
        The quota is charged once, for every request's n × max_new_tokens, and given back when they are refused."""
        if self._registry.closing and not admitted(http_request):
            self._metrics.rejected(model_version.name, model_version.version, "shutdown")
            raise ShuttingDown()
        servable = text_servable(model_version)
        contexts = [_context(model_version, servable.runtime, request) for request in requests]
        sequences = sum(len(request.seeds) for request in requests)
        tracing.annotate(model=model_version.name, version=model_version.version, n=sequences)
        charge = self._quotas.charge(TOKENS, sum(_tokens(request) for request in requests))
        seconds = self.request_timeout_s if timeout_s is None else min(timeout_s, self.request_timeout_s)
        deadline = time.monotonic() + seconds
        streams: list[TextStream] = []
        try:
            for request, context in zip(requests, contexts, strict=True):
                seeds, sampling = request.seeds, request.sampling
                job = servable.batcher.submit([context] * len(seeds), seeds, sampling, deadline=deadline)
                span = tracing.open_span(
                    "text generate",
                    model=model_version.name,
                    version=model_version.version,
                    n=len(seeds),
                    max_new_tokens=sampling.max_new_tokens,
                )
                streams.append(TextStream(model_version, request, job, span))
        except BaseException:
            for stream in streams:
                stream.cancel()
            if charge is not None:
                charge.refund()
            raise
        return streams

    async def complete(self, stream: TextStream, *, http_request: Request | None = None) -> GeneratedText:
        """Every sequence's text; the sequences are dropped if the client leaves first."""
        return await cancel_on_disconnect(http_request, stream.collect())

    async def generate_all(
        self,
        model_version: ModelVersion,
        requests: list[TextRequest],
        *,
        timeout_s: float | None = None,
        http_request: Request | None = None,
    ) -> list[GeneratedText]:
        """Every request's text, all sequences in the same batcher: if one request cannot start (full, draining,
        an unknown character) or fails, or the client leaves, the sequences of all of them are dropped."""
        streams = self.start_all(model_version, requests, http_request=http_request, timeout_s=timeout_s)
        collecting: list[asyncio.Future[GeneratedText]] = []
        try:
            collecting = [asyncio.ensure_future(stream.collect()) for stream in streams]
            return list(await cancel_on_disconnect(http_request, asyncio.gather(*collecting)))
        finally:
            for task in collecting:
                task.cancel()
            for stream in streams:
                stream.cancel()


def _context(model_version: ModelVersion, runtime: TextRuntime, request: TextRequest) -> list[int]:
    """The ids fed before sampling: end-of-text, then the prompt; 422 for characters the model never saw."""
    unknown = unknown_characters(request.prompt, runtime.index)
    if unknown:
        raise InvalidParameter(
            "prompt",
            f"characters outside the vocabulary of model {model_version.name!r}: {params.shown(''.join(unknown))}",
        )
    return context_ids(request.prompt, runtime.index)


def _tokens(request: TextRequest) -> int:
    """What a request counts against its key's quota: the most text it may write."""
    return len(request.seeds) * request.sampling.max_new_tokens
