"""The REST API's part of the app: every resource's routes under /api/v1 and the domain errors' handlers.

The app itself (the dashboard beside it, the guard middleware, start-up) is `zooens.service.app.create_app`.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from zooens.service.api import errors
from zooens.service.api.routes import datasets, ensembles, health, jobs, zoo

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in (health, zoo, datasets, jobs, ensembles):
        router.include_router(module.router)
    return router


def install_api(app: FastAPI) -> None:
    """Add the API to `app`: the handlers that turn domain errors into HTTP answers, and the routes."""
    errors.install(app)
    app.include_router(api_router())
