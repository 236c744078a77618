"""GET /: the draw-a-digit page, and its static assets (plain HTML, CSS, JS; no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import ApiError

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent.parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


# Everything the page loads comes from this server; the picture a user chooses is shown from a blob: URL.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@router.get("/")
async def index() -> FileResponse:
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}
    return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=headers)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    path = STATIC / name
    if "/" in name or path.suffix not in _TYPES or not path.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
