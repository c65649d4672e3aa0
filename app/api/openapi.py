"""What several routes declare alike, written once: shared query parameters (default, limits, OpenAPI text)
and the documented error responses."""

from __future__ import annotations

import functools
from typing import Annotated, Any, TypeVar

from fastapi import Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.api.schemas import AnimationFormat, ErrorResponse, InterpolateFormat

QueryModel = TypeVar("QueryModel", bound=BaseModel)

MAX_FPS = 60
MAX_FRAME_COLUMNS = 1024

ModelPath = Annotated[str, Path(description="Model name.")]
ModelQuery = Annotated[str | None, Query(description="Model name; the default model when absent.")]
VersionQuery = Annotated[str | None, Query(description="Version number, label or 'latest'.")]
StepsQuery = Annotated[int, Query(description="Number of frames (2..GENSERVE_MAX_STEPS).")]
LoopQuery = Annotated[bool, Query(description="Return to the first keyframe, for looping animations.")]
AnimationFormatQuery = Annotated[AnimationFormat, Query(description="png (frame strip), gif, webp or json.")]
InterpolateFormatQuery = Annotated[
    InterpolateFormat | None,
    Query(
        description="Image models: png (frame strip, default), gif, webp or json; sound models: wav (the clips "
        "in order, default), zip or npy."
    ),
]
FpsQuery = Annotated[int, Query(ge=1, le=MAX_FPS, description="Frames per second of gif/webp.")]
FrameColumnsQuery = Annotated[
    int | None, Query(ge=1, le=MAX_FRAME_COLUMNS, description="Columns of the png frame grid.")
]


# Media types of routes that answer with files: image formats, animations, and text generators' formats.
IMAGE_FILES = ("image/png", "application/x-npy", "application/zip")
ANIMATIONS = ("image/png", "image/gif", "image/webp")
AUDIO_FILES = ("audio/wav", "audio/flac", "application/x-npy", "application/zip")
TEXT_FILES = ("text/plain", "text/event-stream")


def file_responses(json_model: Any, media_types: tuple[str, ...]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI 200 entry of a route that answers with a file of one of `media_types`, or `json_model`."""
    return {200: {"content": {media_type: {} for media_type in media_types}, "model": json_model}}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, each answered with the `ErrorResponse` body."""
    return {code: {"model": ErrorResponse} for code in status_codes}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI `parameters` for the fields of a query model (see `parse_query`), each with its description."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", []))
    parameters = []
    for name, field_schema in schema["properties"].items():
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in field_schema:
            parameter["description"] = field_schema.pop("description")
        parameters.append(parameter | {"schema": field_schema})
    return parameters


def parse_query(model: type[QueryModel], request: Request) -> QueryModel:
    """The query string as `model`, in one validation rather than one per parameter, and as FastAPI validates
    query parameters: from strings, the last of repeated values (every value for a list), unknown names
    ignored, each problem a 422 whose location names the field."""
    query = request.query_params
    values: dict[str, Any] = {
        name: query.getlist(name) if name in _list_fields(model) else query[name]
        for name in model.model_fields
        if name in query
    }
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_context=False)
        raise RequestValidationError(
            [{**problem, "loc": ("query", *problem["loc"])} for problem in problems]
        ) from None


@functools.cache
def _list_fields(model: type[BaseModel]) -> frozenset[str]:
    properties = model.model_json_schema()["properties"]
    return frozenset(
        name
        for name, schema in properties.items()
        if schema.get("type") == "array"
        or any(option.get("type") == "array" for option in schema.get("anyOf", []))
    )
