"""/docs (Swagger UI) and /redoc (ReDoc): pages of the dashboard's templates over the app's OpenAPI document.

Their files come from the installed `fastapi-offline` package: /docs and /redoc need no CDN (and no network). Their
pages start them from script files, not inline code, so the docs' Content-Security-Policy allows scripts from 'self'
only. No OAuth2 redirect page: the API's only scheme is a bearer token.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from zooens.service.dashboard.router import templates

DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
"""Swagger UI's and ReDoc's files as the installed `fastapi-offline` package ships them."""
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
}


def docs_router(title: str, openapi_url: str) -> APIRouter:
    """/docs, /redoc and their files under /docs/static/, for the app titled `title` whose OpenAPI document is at
    `openapi_url`."""
    router = APIRouter(include_in_schema=False)

    def asset_url(name: str) -> str:
        return f"/docs/static/{name}"

    def page(request: Request, template: str) -> HTMLResponse:
        context = {"title": title, "openapi_url": openapi_url, "asset": asset_url}
        return templates.TemplateResponse(request, template, context)

    @router.get("/docs", response_class=HTMLResponse)
    def swagger_ui(request: Request) -> HTMLResponse:
        return page(request, "swagger.html")

    @router.get("/redoc", response_class=HTMLResponse)
    def redoc(request: Request) -> HTMLResponse:
        return page(request, "redoc.html")

    @router.get("/docs/static/{name}")
    def docs_asset(name: str) -> FileResponse:
        if name not in DOCS_ASSETS:
            raise HTTPException(404, f"No API documentation file {name[:100]!r}.")
        return FileResponse(
            DOCS_ASSETS_DIR / name, media_type=DOCS_ASSETS[name], headers={"Cache-Control": "public, max-age=86400"}
        )

    return router
