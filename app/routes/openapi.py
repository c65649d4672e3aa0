"""What several routes declare alike, written once: shared query parameters (default, limits, OpenAPI text)
and the documented error responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from app.schemas import AnimationFormat, ErrorResponse

DEFAULT_STEPS = 16
DEFAULT_FPS = 12
MAX_FPS = 60
MAX_FRAME_COLUMNS = 1024

ModelQuery = Annotated[str | None, Query(description="Model name; the default model when absent.")]
VersionQuery = Annotated[str | None, Query(description="Version number, label or 'latest'.")]
StepsQuery = Annotated[int, Query(description="Number of frames (2..GENSERVE_MAX_STEPS).")]
LoopQuery = Annotated[bool, Query(description="Return to the first keyframe, for looping animations.")]
AnimationFormatQuery = Annotated[AnimationFormat, Query(description="png (frame strip), gif, webp or json.")]
FpsQuery = Annotated[int, Query(ge=1, le=MAX_FPS, description="Frames per second of gif/webp.")]
FrameColumnsQuery = Annotated[
    int | None, Query(ge=1, le=MAX_FRAME_COLUMNS, description="Columns of the png frame grid.")
]


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, each answered with the `ErrorResponse` body."""
    return {code: {"model": ErrorResponse} for code in status_codes}
