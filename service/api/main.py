"""The FastAPI application: REST API under /api/v1, the dashboard at /."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from zooens import __version__
from zooens.service.api import errors
from zooens.service.api.routes import datasets, ensembles, health, jobs, zoo
from zooens.service.dashboard import router as dashboard_router
from zooens.service.db.session import upgrade_to_head
from zooens.service.jobs import start_background_worker

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in (health, zoo, datasets, jobs, ensembles):
        router.include_router(module.router)
    return router


def create_app(*, with_worker: bool = False) -> FastAPI:
    """The app; with `with_worker`, one worker thread runs jobs in this process."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = None
        if with_worker:
            upgrade_to_head()
            thread, stop = start_background_worker(poll_seconds=0.5)
            logger.info("started an in-process worker")
        yield
        if stop is not None:
            stop.set()

    app = FastAPI(
        title="zooens",
        version=__version__,
        description="Rank a pre-trained zoo on your dataset, fine-tune the best models and ensemble them.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(api_router())
    app.include_router(dashboard_router)
    return app
