"""Image URLs: one seed's image at an address browsers and CDNs may keep for good, and a redirect to the newest."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.api import params
from app.api.caching import IMMUTABLE, REVALIDATE, etag_matches, not_modified, strong_etag
from app.api.deps import RegistryDep, RendererDep, SeedFilesDep
from app.api.headers import model_headers, seeds_header
from app.api.openapi import ModelPath, error_responses
from app.api.schemas import ImageFileFormat
from app.image.seed_files import SeedFile, SeedFiles
from app.server.errors import InvalidParameter
from app.serving.registry import GENERATE, ModelRegistry
from genserve.conventions import MAX_SEED

router = APIRouter(tags=["images"])

_IMAGE_FILE = "/models/{name}/versions/{version}/images/{seed}.{format}"

VersionPath = Annotated[
    str, Path(description="A version number; /models/{name}/images/{seed}.{format} redirects to the newest.")
]
SeedPath = Annotated[int, Path(description=f"The image's seed (0..{MAX_SEED}).")]
FormatPath = Annotated[ImageFileFormat, Path(description="png, or webp (lossless).")]
TruncationQuery = Annotated[float | None, Query(description="Truncation psi in (0, 1]; 1 = none.")]
LabelQuery = Annotated[
    str | None, Query(description="Class name or index, for conditional models (default: the first class).")
]


def _plan(
    registry: ModelRegistry,
    seed_files: SeedFiles,
    name: str,
    version: int | None,
    seed: int,
    truncation: float | None,
    label: str | None,
    format: ImageFileFormat,
) -> SeedFile:
    """The file a URL names: fields checked, the version resolved (an image generator), the class checked."""
    params.check_range("seed", seed, 0, MAX_SEED)
    psi = params.check_truncation(truncation)
    model_version = registry.resolve(params.parse_model_name(name), version, capability=GENERATE)
    return seed_files.plan(model_version, seed, psi, label, format.value)


@router.get(
    _IMAGE_FILE,
    name="image_file",
    responses={
        200: {"content": {"image/png": {}, "image/webp": {}}},
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **error_responses(404, 422, 500, 503, 504),
    },
    response_class=Response,
)
async def image_file(
    request: Request,
    registry: RegistryDep,
    renderer: RendererDep,
    seed_files: SeedFilesDep,
    name: ModelPath,
    version: VersionPath,
    seed: SeedPath,
    format: FormatPath,
    truncation: TruncationQuery = None,
    label: LabelQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One image drawn from `seed` by a numbered version: the same bytes for good, so it is served with
    `Cache-Control: immutable` and an ETag, and repeats come from a cache of rendered files."""
    number = params.parse_version(version)
    if not isinstance(number, int):
        raise InvalidParameter(
            "version",
            f"must be a version number here, got {params.shown(version)}; the same URL without "
            "/versions/{version} redirects to the newest",
        )
    file = _plan(registry, seed_files, name, number, seed, truncation, label, format)
    headers = {
        "ETag": strong_etag({**file.cache_key(), **renderer.rendering_key()}),
        "Cache-Control": IMMUTABLE,
    }
    if etag_matches(if_none_match, headers["ETag"]):
        return not_modified(file.model_version, headers)
    body = await seed_files.body(file, http_request=request)
    return renderer.respond(file.model_version, file.format, body, {**seeds_header([seed]), **headers})


@router.get(
    "/models/{name}/images/{seed}.{format}",
    status_code=307,
    responses={
        307: {"description": "Redirect to the image's URL under the newest version."},
        **error_responses(404, 422, 500, 503),
    },
    response_class=RedirectResponse,
)
async def newest_image_file(
    request: Request,
    registry: RegistryDep,
    seed_files: SeedFilesDep,
    name: ModelPath,
    seed: SeedPath,
    format: FormatPath,
    truncation: TruncationQuery = None,
    label: LabelQuery = None,
) -> RedirectResponse:
    """Redirect to this image under the model's newest version; the redirect itself is not cached, so a new
    version is picked up as soon as it serves."""
    file = _plan(registry, seed_files, name, None, seed, truncation, label, format)
    model_version = file.model_version
    path = request.app.url_path_for(
        "image_file",
        name=model_version.name,
        version=str(model_version.version),
        seed=str(seed),
        format=file.format,
    )
    query = urlencode(file.query())
    location = str(request.scope.get("root_path", "")) + str(path) + (f"?{query}" if query else "")
    headers = {**model_headers(model_version), "Cache-Control": REVALIDATE}
    return RedirectResponse(location, status_code=307, headers=headers)
