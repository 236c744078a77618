"""GET /docs and /redoc: the API's documentation, with Swagger UI and ReDoc served from this server.

FastAPI's own pages load both from a CDN, so they are blank without internet access, and start
with an inline script that a content security policy would have to allow. These pages take the
JavaScript and CSS from the ``fastapi-offline`` package (a dependency) and start Swagger UI from
``/static/docs.js``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from app.errors import ApiError

router = APIRouter(include_in_schema=False)
ASSETS = Path(str(files("fastapi_offline") / "static"))
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Swagger UI and ReDoc set styles inline (ReDoc's styled-components write <style> elements), show
# icons as data: URIs, and ReDoc searches in a worker made from a blob.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>vit-digits API: {title}</title>
  <link rel="icon" href="/docs/assets/favicon.png">
  {head}
</head>
<body>
  {body}
</body>
</html>
"""
SWAGGER_UI = _PAGE.format(
    title="Swagger UI",
    head='<link rel="stylesheet" href="/docs/assets/swagger-ui.css">',
    body='<div id="swagger-ui"></div>\n  <script src="/docs/assets/swagger-ui-bundle.js"></script>\n'
    '  <script src="/static/docs.js"></script>',
)
REDOC = _PAGE.format(
    title="ReDoc",
    head="",
    body='<redoc spec-url="/openapi.json"></redoc>\n  <script src="/docs/assets/redoc.standalone.js"></script>',
)


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_POLICY, "Cache-Control": "no-cache"})


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return _page(SWAGGER_UI)


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return _page(REDOC)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in _ASSET_TYPES:
        raise ApiError(404, "not_found", "no such documentation asset")
    return FileResponse(ASSETS / name, media_type=_ASSET_TYPES[name], headers={"Cache-Control": "max-age=86400"})
