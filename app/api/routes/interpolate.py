"""GET /interpolate: a deterministic walk through latent space between keyframe seeds; the version's kind says
how its frames (images, or a sound generator's clips) are answered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from app.api import defaults, params
from app.api.caching import REVALIDATE, etag_matches, not_modified, strong_etag
from app.api.deps import GenerationDep, RegistryDep, RendererDep, SettingsDep
from app.api.openapi import (
    ANIMATIONS,
    AUDIO_FILES,
    FpsQuery,
    FrameColumnsQuery,
    InterpolateFormatQuery,
    LoopQuery,
    ModelQuery,
    StepsQuery,
    VersionQuery,
    error_responses,
    file_responses,
)
from app.api.schemas import InterpolateJSONResponse, InterpolationMethodName
from app.latent.generation import InterpolationRequest
from app.latent.servable import latent_servable
from app.server.errors import InvalidParameter
from app.serving.registry import INTERPOLATE
from genserve.conventions import MAX_SEED

router = APIRouter(tags=["generation"])


@router.get(
    "/interpolate",
    responses={
        **file_responses(InterpolateJSONResponse, ANIMATIONS + AUDIO_FILES),
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **error_responses(404, 422, 500, 503, 504),
    },
)
async def interpolate(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    generation: GenerationDep,
    renderer: RendererDep,
    model: ModelQuery = None,
    version: VersionQuery = None,
    start: Annotated[int | None, Query(description="Seed of the first keyframe.")] = None,
    end: Annotated[int | None, Query(description="Seed of the last keyframe.")] = None,
    seeds: Annotated[
        str | None, Query(description="Keyframe seeds, e.g. 3,7,11 (instead of start/end).")
    ] = None,
    steps: StepsQuery = defaults.STEPS,
    method: Annotated[InterpolationMethodName, Query(description="slerp (default) or lerp.")] = (
        InterpolationMethodName.slerp
    ),
    loop: LoopQuery = False,
    truncation: Annotated[float | None, Query(description="Truncation psi in (0, 1].")] = None,
    label: Annotated[
        str | None,
        Query(description="Class name or index of every frame; required by conditional models."),
    ] = None,
    start_label: Annotated[
        str | None,
        Query(
            description="Class of the first frame, blended toward end_label along the path (instead of label)."
        ),
    ] = None,
    end_label: Annotated[str | None, Query(description="Class of the last frame, with start_label.")] = None,
    format: InterpolateFormatQuery = None,
    fps: FpsQuery = defaults.FPS,
    cols: FrameColumnsQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Frames along a path through the keyframes' latents; identical requests give identical bytes."""
    keyframe_seeds = _keyframe_seeds(start, end, seeds, settings.max_steps)
    params.check_range("steps", steps, 2, settings.max_steps)
    interpolation = InterpolationRequest(
        steps=steps,
        method=method.value,
        loop=loop,
        keyframe_seeds=keyframe_seeds,
        truncation=params.check_truncation(truncation),
        label=label,
        start_label=start_label,
        end_label=end_label,
    )
    requested_version = params.parse_version(version)
    model_version = registry.resolve(
        params.parse_model_name(model), requested_version, capability=INTERPOLATE
    )
    frames_rendering = latent_servable(model_version).kind.frames_rendering(
        None if format is None else format.value, steps=steps, fps=fps, cols=cols
    )
    plan = generation.plan_interpolation(model_version, interpolation)
    rendering = renderer.rendering_key()
    etag = strong_etag(
        {**plan.cache_key(), **rendering, "format": frames_rendering.format, "fps": fps, "cols": cols}
    )
    headers = {
        "ETag": etag,
        "Cache-Control": _cache_control(requested_version, settings.interpolate_max_age_s),
    }
    if etag_matches(if_none_match, etag):
        return not_modified(model_version, headers)
    frames = await generation.interpolate(plan, http_request=request)
    return await renderer.render(frames_rendering.view(frames), frames_rendering.format, headers)


def _keyframe_seeds(start: int | None, end: int | None, seeds: str | None, max_count: int) -> list[int]:
    if seeds is not None:
        if start is not None or end is not None:
            raise InvalidParameter("seeds", "give either seeds or start/end, not both")
        return params.parse_seed_list(seeds, max_count)
    if start is None or end is None:
        raise InvalidParameter("start", "give both start and end seeds, or seeds=a,b,c")
    return [params.check_range("start", start, 0, MAX_SEED), params.check_range("end", end, 0, MAX_SEED)]


def _cache_control(requested_version: int | str | None, max_age_s: int) -> str:
    # A numbered version never changes; 'latest' or a label may point elsewhere after a reload.
    if isinstance(requested_version, int):
        return f"public, max-age={max_age_s}"
    return REVALIDATE
