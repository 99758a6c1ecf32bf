from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from zooens.service.api.schemas import Health
from zooens.service.db.session import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz():
    """The database answers and its schema is at the newest migration."""

    try:
        revision = current_revision()
    except Exception as exc:  # any driver error means not ready
        return JSONResponse(status_code=503, content={"status": "unavailable", "database": f"unreachable: {type(exc).__name__}: {exc}"})
    if revision != head_revision():
        return JSONResponse(
            status_code=503,
            content={"status": "unavailable", "revision": revision,
                     "database": f"at revision {revision}, head is {head_revision()}: run `zooens db upgrade`"},
        )
    return Health(status="ok", database="ok", revision=revision)
