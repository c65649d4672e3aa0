"""GET /interpolate: a deterministic walk through latent space between keyframe seeds."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from app import imaging, params
from app.deps import GenerationDep, RegistryDep, SettingsDep
from app.errors import InvalidParameter
from app.latents import MAX_SEED, interpolation_path, lerp, truncate
from app.registry import ModelVersion
from app.schemas import AnimationFormat, ErrorResponse, InterpolateJSONResponse, InterpolationMethodName

router = APIRouter(tags=["generation"])

ANIMATION_MEDIA_TYPES = {
    AnimationFormat.png: "image/png",
    AnimationFormat.gif: "image/gif",
    AnimationFormat.webp: "image/webp",
}


@router.get(
    "/interpolate",
    responses={
        200: {
            "content": {"image/png": {}, "image/gif": {}, "image/webp": {}},
            "model": InterpolateJSONResponse,
        },
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **{code: {"model": ErrorResponse} for code in (404, 422, 500, 503, 504)},
    },
)
async def interpolate(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    generation: GenerationDep,
    model: Annotated[str | None, Query(description="Model name; the default model when absent.")] = None,
    version: Annotated[str | None, Query(description="Version number or 'latest'.")] = None,
    start: Annotated[int | None, Query(description="Seed of the first keyframe.")] = None,
    end: Annotated[int | None, Query(description="Seed of the last keyframe.")] = None,
    seeds: Annotated[
        str | None, Query(description="Keyframe seeds, e.g. 3,7,11 (instead of start/end).")
    ] = None,
    steps: Annotated[int, Query(description="Number of frames (2..GENSERVE_MAX_STEPS).")] = 16,
    method: Annotated[InterpolationMethodName, Query(description="slerp (default) or lerp.")] = (
        InterpolationMethodName.slerp
    ),
    loop: Annotated[bool, Query(description="Return to the first keyframe, for looping animations.")] = False,
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
    format: Annotated[AnimationFormat, Query(description="png (frame strip), gif, webp or json.")] = (
        AnimationFormat.png
    ),
    fps: Annotated[int, Query(ge=1, le=60, description="Frames per second of gif/webp.")] = 12,
    cols: Annotated[int | None, Query(ge=1, le=1024, description="Columns of the png frame grid.")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Frames along a path through the keyframes' latents; identical requests give identical bytes."""
    keyframe_seeds = _keyframe_seeds(start, end, seeds, settings.max_steps)
    params.check_range("steps", steps, 2, settings.max_steps)
    psi = params.check_truncation(truncation)
    requested_version = params.parse_version(version)
    model_version = registry.resolve(params.parse_model_name(model), requested_version)
    blend = _label_blend(model_version, label, start_label, end_label)
    # Every frame shows one class (or a smooth blend): a path that changed class each frame would only flicker.
    labels = None if blend else params.labels_for(model_version.metadata, label, steps, cycle=False)
    etag = _etag(
        model_version,
        {
            "seeds": keyframe_seeds,
            "steps": steps,
            "method": method.value,
            "loop": loop,
            "psi": psi,
            "label": None if labels is None else int(labels[0]),
            "label_blend": list(blend) if blend else None,
            "format": format.value,
            "fps": fps,
            "cols": cols,
        },
    )
    headers = {
        "ETag": etag,
        "Cache-Control": _cache_control(requested_version, settings.interpolate_max_age_s),
        "X-Model": model_version.name,
        "X-Model-Version": str(model_version.version),
    }
    if if_none_match and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    keyframes = await generation.latents_for_seeds(keyframe_seeds, model_version.metadata.latent_dim)
    latents, positions = interpolation_path(keyframes, steps, method.value, loop=loop)
    embeddings = None
    if blend:
        path_length = len(keyframe_seeds) - 1 + int(loop)
        embeddings = _blended_embeddings(model_version, blend, positions / path_length)
    images = await generation.generate(
        model_version, truncate(latents, psi), labels, label_embeddings=embeddings, request=request
    )
    if format is AnimationFormat.json:
        payload = await generation.encode(
            model_version,
            format.value,
            frames_payload,
            model_version,
            keyframe_seeds,
            method.value,
            images,
            positions,
        )
        return JSONResponse(payload, headers=headers)
    content = await generation.encode(model_version, format.value, encode_frames, format, images, fps, cols)
    return Response(content, media_type=ANIMATION_MEDIA_TYPES[format], headers=headers)


def _label_blend(
    model_version: ModelVersion, label: str | None, start_label: str | None, end_label: str | None
) -> tuple[int, int] | None:
    """(start class, end class) when the request blends classes; None when it does not."""
    if start_label is None and end_label is None:
        return None
    if label is not None:
        raise InvalidParameter("label", "give either label or start_label/end_label, not both")
    if start_label is None or end_label is None:
        missing = "start_label" if start_label is None else "end_label"
        raise InvalidParameter(missing, "give both start_label and end_label to blend two classes")
    metadata = model_version.metadata
    start, end = (
        params.label_index(metadata, field, value)
        for field, value in [("start_label", start_label), ("end_label", end_label)]
    )
    runtime = model_version.runtime
    if runtime is None or runtime.label_embeddings is None:
        raise InvalidParameter(
            "start_label",
            f"model {model_version.name!r} version {model_version.version} cannot blend classes (it was "
            "exported without label embedding signatures): use label",
        )
    return start, end


def _blended_embeddings(
    model_version: ModelVersion, blend: tuple[int, int], fractions: np.ndarray
) -> np.ndarray:
    """Each frame's label embedding, moving in a straight line from the start class's to the end class's."""
    runtime = model_version.runtime
    table = runtime.label_embeddings if runtime is not None else None
    if table is None:  # checked by _label_blend; the version cannot change between the two calls
        raise InvalidParameter("start_label", "this model cannot blend classes")
    return lerp(table[blend[0]], table[blend[1]], fractions).astype(np.float32)


def _keyframe_seeds(start: int | None, end: int | None, seeds: str | None, max_count: int) -> list[int]:
    if seeds is not None:
        if start is not None or end is not None:
            raise InvalidParameter("seeds", "give either seeds or start/end, not both")
        return params.parse_seed_list(seeds, max_count)
    if start is None or end is None:
        raise InvalidParameter("start", "give both start and end seeds, or seeds=a,b,c")
    return [params.check_range("start", start, 0, MAX_SEED), params.check_range("end", end, 0, MAX_SEED)]


def _etag(model_version: ModelVersion, request_key: dict[str, Any]) -> str:
    """Strong validator: the frames depend only on the resolved version and these fields."""
    key = json.dumps(
        {"model": model_version.name, "version": model_version.version, **request_key}, sort_keys=True
    )
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def _cache_control(requested_version: int | str | None, max_age_s: int) -> str:
    # A numbered version never changes; 'latest' or a label may point elsewhere after a reload, so
    # caches must revalidate (a cheap 304 when nothing changed).
    if isinstance(requested_version, int):
        return f"public, max-age={max_age_s}"
    return "no-cache"


def _matches(header: str, etag: str) -> bool:
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in candidates or etag in candidates


def encode_frames(format: AnimationFormat, images: np.ndarray, fps: int, cols: int | None) -> bytes:
    """Frames as a PNG strip (grid) or an endlessly looping GIF/WebP."""
    if format is AnimationFormat.png:
        return imaging.encode_grid_png(images, cols or min(len(images), 16))
    return imaging.encode_animation(images, fps, format.value.upper())


def frames_payload(
    model_version: ModelVersion,
    seeds: list[int] | None,
    method: str,
    images: np.ndarray,
    positions: np.ndarray,
) -> dict[str, Any]:
    """The JSON form of an interpolation: each frame's position on the path and its PNG."""
    frames = [
        {"position": round(float(position), 6), "png_base64": png}
        for position, png in zip(positions, imaging.encode_png_list_base64(images), strict=True)
    ]
    response = InterpolateJSONResponse(
        model=model_version.name, version=model_version.version, seeds=seeds, method=method, frames=frames
    )
    return response.model_dump(mode="json")
