"""GET /playground (the page) and its static files; GET / sends browsers there.

The page is plain HTML, CSS and JavaScript shipped in this package: no build step and nothing loaded from
elsewhere, so it works offline. It calls the service's own routes, like any other client.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

PAGE_URL = "/playground"
ASSETS_URL = f"{PAGE_URL}/static"
# The page loads its own files and calls its own origin; images arrive as blob: and data: URLs, sound as blob:.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def _static_dir() -> Path:
    return Path(str(resources.files("app.playground") / "static"))


@router.get(PAGE_URL, name="playground")
async def playground() -> FileResponse:
    return FileResponse(
        _static_dir() / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/")
async def home(request: Request) -> RedirectResponse:
    return RedirectResponse(str(request.url_for("playground")))


def install_playground(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=_static_dir()), name="playground-static")
    app.include_router(router)
