"""Liveness (`/healthz`) and readiness (`/readyz`): the database, its schema, the workers, the queue.

`/readyz` says ok or not ok and why in a word, never how the database is reached (host, port,
database name, driver text): the exception goes to the server's log only.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from zooens.service import registry
from zooens.service.api.schemas import Health
from zooens.service.db.session import current_revision, head_revision, session_scope
from zooens.service.jobs.worker import background_worker_alive
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """Whether this server can take and run jobs now."""

    status: str = Field(description="'ok', or 'unavailable' (answered with 503).")
    database: str = Field(description="'ok', 'unreachable', or 'not at head' (run `zooens db upgrade`).")
    revision: str | None = Field(default=None, description="The schema's migration revision, when reachable.")
    workers_alive: int | None = Field(
        default=None, description="Workers seen within `stale_after_seconds` (every process sharing this database)."
    )
    worker_thread: bool | None = Field(
        default=None, description="Whether this server's in-process worker thread is alive; null if it has none."
    )
    oldest_queued_seconds: float | None = Field(
        default=None, description="Age of the oldest queued job in seconds; null when none is queued."
    )


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


def _unavailable(body: Readiness) -> JSONResponse:
    return JSONResponse(status_code=503, content=body.model_dump())


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz():
    """Ready: the database answers, its schema is at the newest migration, and the in-process
    worker thread (when this server was started with one) is alive. Also reports how many
    workers are alive and how long the oldest queued job has waited."""
    thread = background_worker_alive()
    try:
        revision = current_revision()
        at_head = revision == head_revision()
        workers = oldest = None
        if at_head:
            with session_scope() as s:
                workers = registry.count_live_workers(s, get_settings().stale_after_seconds)
                oldest = registry.oldest_queued_age(s)
    except Exception:  # any driver error means not ready; its text names the server, so it is only logged
        logger.warning("readyz: the database is unreachable", exc_info=True)
        return _unavailable(Readiness(status="unavailable", database="unreachable", worker_thread=thread))
    if not at_head:
        return _unavailable(
            Readiness(status="unavailable", database="not at head", revision=revision, worker_thread=thread)
        )
    body = Readiness(
        status="ok",
        database="ok",
        revision=revision,
        workers_alive=workers,
        worker_thread=thread,
        oldest_queued_seconds=None if oldest is None else round(oldest, 3),
    )
    if thread is False:
        logger.warning("readyz: the in-process worker thread is dead")
        return _unavailable(body.model_copy(update={"status": "unavailable"}))
    return body
