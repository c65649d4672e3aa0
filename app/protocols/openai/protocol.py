"""The OpenAI completions API's wire types: what `POST /openai/v1/completions` and `GET /openai/v1/models` read
and answer, in OpenAI's field names.

A request may carry OpenAI's other fields when they ask for nothing beyond plain sampling (`user`, an empty
`logit_bias`, `echo: false`, zero penalties, `best_of: 1`); a field genserve cannot honour is a 400 naming it,
and an unknown field is a 400 too, so a misspelt option never passes unnoticed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator
from pydantic_core import PydanticCustomError

# JSON numbers only: `true` is not 1 and "0.5" is not 0.5.
Number = StrictInt | StrictFloat
FinishReason = Literal["stop", "length"]


class StreamOptions(BaseModel):
    """`include_usage`: end a stream with a chunk holding no choices and the usage."""

    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    """The body of `POST /openai/v1/completions`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A text model's name, or `name:version` (a number or label).")
    prompt: str | list[str] = Field(
        description="The text to continue, or several, each with its own choices."
    )
    max_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    n: StrictInt | None = None
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # OpenAI's fields that change nothing at their neutral values, and are refused at any other.
    user: str | None = None
    logit_bias: dict[str, Number] | None = None
    echo: StrictBool | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    best_of: StrictInt | None = None
    logprobs: StrictInt | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return value
        raise PydanticCustomError(
            "prompt",
            "must be a string or a non-empty list of strings (token ids are not taken: the model's tokens "
            "are its characters)",
        )

    @field_validator("stop", mode="before")
    @classmethod
    def _text_stops(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise PydanticCustomError("stop", "must be a string or a list of strings")

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def stops(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


class Usage(BaseModel):
    """Tokens are characters: the prompts' characters once each, and the characters every choice generated."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    """One choice, or in a stream the new text of one choice (its `finish_reason` on its last chunk)."""

    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class CompletionResponse(BaseModel):
    """A completion, and each chunk of a streamed one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    """A text model; `created` is its version's export time in Unix seconds."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """The answer of `GET /openai/v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error on these routes: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorBody
