from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from zooens.service import lifecycle, registry, reports
from zooens.service.api.deps import JobId, SessionDep, SettingsDep, TokenDep, read_access
from zooens.service.api.errors import COMMON_ERRORS, described
from zooens.service.api.schemas import (
    EnsemblePublic,
    JobCreate,
    JobPublic,
    Page,
    RankingRow,
    RunPublic,
)
from zooens.service.jobs import submit, submit_job
from zooens.service.reports import job_public

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=COMMON_ERRORS)

NO_JOB = described(404, "No such job.")


@router.post(
    "",
    response_model=JobPublic,
    status_code=202,
    responses={
        **described(404, "No such dataset, or the zoo names no known model."),
        **described(409, "The job cannot be queued in this state."),
    },
)
def create_job(body: JobCreate, session: SessionDep, _: TokenDep) -> JobPublic:
    """Queue a job; a worker runs it. Answers 202 with the job.

    The dataset is checked by its recorded counts here; its images are checked by the worker.
    """
    job = submit_job(session, body.dataset_id, body.zoo, body.params())
    return job_public(job)


@router.get("", response_model=Page[JobPublic], dependencies=[Depends(read_access)])
def list_jobs(
    session: SessionDep,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
        Query(description="queued, running, succeeded, failed or cancelled"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[JobPublic]:
    rows, count = registry.list_jobs(session, status=status, limit=limit, offset=offset)
    return Page(data=[job_public(j) for j in rows], count=count)


@router.get("/{job_id}", response_model=JobPublic, dependencies=[Depends(read_access)], responses=NO_JOB)
def show_job(job_id: JobId, session: SessionDep) -> JobPublic:
    """Status, stage and per-stage progress ({stage: {done, total, current}})."""
    return job_public(registry.get_job(session, job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    status_code=202,
    responses={**NO_JOB, **described(409, "The job has finished already.")},
)
def cancel_job(job_id: JobId, session: SessionDep, _: TokenDep) -> JobPublic:
    """Queued jobs stop at once; running ones after their current unit. 409 if already finished."""
    return job_public(registry.request_cancel(session, job_id))


@router.post(
    "/{job_id}/resume",
    response_model=JobPublic,
    status_code=202,
    responses={**NO_JOB, **described(409, "The job is queued, running or succeeded.")},
)
def resume_job(job_id: JobId, session: SessionDep, _: TokenDep) -> JobPublic:
    """Put a failed or cancelled job back in the queue; a worker runs its unfinished units (finished ones
    are kept). 409 for a queued, running or succeeded job."""
    return job_public(submit.resume_job(session, job_id))


@router.post(
    "/{job_id}/retry",
    response_model=JobPublic,
    status_code=201,
    responses={**NO_JOB, **described(409, "The job has not finished.")},
)
def retry_job(job_id: JobId, session: SessionDep, _: TokenDep) -> JobPublic:
    """A new queued job with this job's dataset, models and parameters (this one is kept). 201 with the new
    job; 409 while this one is queued or running."""
    return job_public(submit.retry_job(session, job_id))


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses={**NO_JOB, **described(409, "The job is queued or running.")},
)
def delete_job(job_id: JobId, session: SessionDep, settings: SettingsDep, _: TokenDep) -> Response:
    """Delete a finished job, its results and its files. 409 while it is queued or running (cancel it first)."""
    lifecycle.delete_job(session, job_id, settings)
    return Response(status_code=204)


@router.get("/{job_id}/ranking", response_model=list[RankingRow], dependencies=[Depends(read_access)], responses=NO_JOB)
def job_ranking(job_id: JobId, session: SessionDep) -> list[RankingRow]:
    """Models best first by leave-one-out kNN accuracy, with their best fine-tuned run when known."""
    registry.get_job(session, job_id)
    return reports.ranking_rows(session, job_id)


@router.get("/{job_id}/runs", response_model=list[RunPublic], dependencies=[Depends(read_access)], responses=NO_JOB)
def job_runs(job_id: JobId, session: SessionDep) -> list[RunPublic]:
    registry.get_job(session, job_id)
    return reports.run_rows(session, job_id)


@router.get(
    "/{job_id}/ensemble",
    response_model=EnsemblePublic,
    dependencies=[Depends(read_access)],
    responses=described(404, "No such job, or it has no ensemble yet."),
)
def job_ensemble(job_id: JobId, session: SessionDep) -> EnsemblePublic:
    job = registry.get_job(session, job_id)
    view = reports.ensemble_view(session, job_id)
    if view is None:
        raise HTTPException(
            404,
            f"Job {job_id} has no ensemble yet (status {job.status}, stage {job.stage}); "
            "it is built after the fine-tuning sweep.",
        )
    return view
