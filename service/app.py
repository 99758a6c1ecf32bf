"""The web app: the REST API under /api/v1 (`zooens.service.api`), the dashboard at / and /dashboard, the API's
/docs and /redoc (`zooens.service.dashboard`), and the guard middleware in front of all of them.

The API and the dashboard never import each other; this module puts them together. `zooens serve` runs
`create_app()`; an ASGI server can call the same factory itself: `uvicorn --factory zooens.service.app:create_app`.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from zooens._version import __version__
from zooens.service import reports
from zooens.service.api.middleware import GuardMiddleware
from zooens.service.api.router import install_api
from zooens.service.dashboard import docs_router, unauthorised_page
from zooens.service.dashboard import router as dashboard_router
from zooens.service.db.session import upgrade_to_head
from zooens.service.jobs import start_background_worker
from zooens.service.uploads import clean_staging
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


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
        warming = reports.warm_catalogue()
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
    install_api(app)
    app.include_router(dashboard_router)
    app.include_router(docs_router(app.title, app.openapi_url))
    # outermost of our middleware: auth and body limits are checked before any route reads the body
    app.add_middleware(GuardMiddleware, unauthorised_page=unauthorised_page)
    return app
