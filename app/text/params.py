"""Validation of a text request's fields (422 naming the field): `GenerateBody` to a `TextRequest`.

One home for the defaults and limits of text generation, used by `POST /generate` and by the inference
protocols alike.
"""

from __future__ import annotations

import math

from app.api import defaults, params
from app.api.schemas import IMAGE_FIELDS, GenerateBody, GenerateFormat
from app.config import Settings
from app.server.errors import InvalidParameter
from app.serving.registry import ModelVersion
from app.text.batching import Sampling
from app.text.generation import TextRequest
from app.text.servable import text_servable

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 100.0
_TEXT_FORMATS = (GenerateFormat.json, GenerateFormat.text)


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
    count = params.check_range("n", defaults.SEQUENCES if fields.n is None else fields.n, 1, settings.max_n)
    default_tokens = min(defaults.MAX_NEW_TOKENS, settings.max_new_tokens)
    max_new_tokens = params.check_range(
        "max_new_tokens",
        default_tokens if fields.max_new_tokens is None else fields.max_new_tokens,
        1,
        settings.max_new_tokens,
    )
    check_request_tokens(count, len(prompt), max_new_tokens, settings.max_text_request_tokens)
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


def check_request_tokens(count: int, prompt_chars: int, max_new_tokens: int, limit: int) -> None:
    """A 422 naming the fields when the request's sequences would take more steps than `limit` together."""
    tokens = count * (prompt_chars + max_new_tokens)
    if tokens > limit:
        raise InvalidParameter(
            "n",
            f"n × (prompt length + max_new_tokens) = {count} × ({prompt_chars} + {max_new_tokens}) = {tokens} "
            f"tokens, over the limit of {limit} per request (GENSERVE_MAX_TEXT_REQUEST_TOKENS); ask for fewer "
            "sequences, fewer new tokens or a shorter prompt",
        )


def check_rows_tokens(requests: list[TextRequest], limit: int) -> None:
    """The same limit for an inference call's rows together (one sequence each); a 422 naming `prompt`."""
    tokens = sum(len(request.prompt) + request.sampling.max_new_tokens for request in requests)
    if tokens > limit:
        raise InvalidParameter(
            "prompt",
            f"the {len(requests)} rows' (prompt length + max_new_tokens) add up to {tokens} tokens, over the "
            f"limit of {limit} per request (GENSERVE_MAX_TEXT_REQUEST_TOKENS); send fewer rows, fewer new "
            "tokens or shorter prompts",
        )


def _temperature(value: float | None) -> float:
    if value is None:
        return defaults.TEMPERATURE
    if not (math.isfinite(value) and 0.0 <= value <= MAX_TEMPERATURE):
        raise InvalidParameter(
            "temperature", f"must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {value}"
        )
    return float(value)


def _top_k(value: int | None, model_version: ModelVersion) -> int | None:
    if value is None:
        return None
    size = text_servable(model_version).runtime.vocabulary_size
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
