"""The FastAPI application: REST API under /api/v1, the dashboard at /."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from zooens import __version__
from zooens.service.api import errors
from zooens.service.api.middleware import GuardMiddleware
from zooens.service.api.routes import datasets, ensembles, health, jobs, zoo
from zooens.service.dashboard import router as dashboard_router
from zooens.service.dashboard.router import templates, unauthorised_page
from zooens.service.db.session import upgrade_to_head
from zooens.service.jobs import start_background_worker
from zooens.service.uploads import clean_staging
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
"""Swagger UI's and ReDoc's files as the installed `fastapi-offline` package ships them: /docs and /redoc need no
CDN (and no network)."""
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
}


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in (health, zoo, datasets, jobs, ensembles):
        router.include_router(module.router)
    return router


def docs_router(title: str, openapi_url: str) -> APIRouter:
    """/docs (Swagger UI) and /redoc (ReDoc) from local files; their pages start them from script files, not inline
    code, so the docs' Content-Security-Policy allows scripts from 'self' only. No OAuth2 redirect page: the API's
    only scheme is a bearer token."""
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


def create_app(*, with_worker: bool = False) -> FastAPI:
    """The app; with `with_worker`, one worker thread runs jobs in this process.

    Start-up order matters: the schema is brought to head *before* the worker thread starts (a worker polling a
    database without tables fails every poll), staging left by a crash is removed, and the zoo catalogue is built
    in the background so that no request pays for it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = None
        settings = get_settings()
        try:
            clean_staging(settings)
        except Exception:  # a cleaning failure must not keep the service down; it is retried at the next start
            logger.warning("could not clean the upload staging area", exc_info=True)
        warming = zoo.warm_catalogue()
        if with_worker:
            upgrade_to_head()
            thread, stop = start_background_worker(poll_seconds=0.5)
            logger.info("started an in-process worker")
        yield
        if stop is not None:
            stop.set()
        warming.join(timeout=60)

    app = FastAPI(
        title="zooens",
        version=__version__,
        description="Rank a pre-trained zoo on your dataset, fine-tune the best models and ensemble them.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(api_router())
    app.include_router(dashboard_router)
    app.include_router(docs_router(app.title, app.openapi_url))
    # outermost of our middleware: auth and body limits are checked before any route reads the body
    app.add_middleware(GuardMiddleware, unauthorised_page=unauthorised_page)
    return app
