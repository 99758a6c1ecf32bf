from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from zooens.service import registry, reports
from zooens.service.api.deps import JobId, SessionDep, TokenDep, read_access
from zooens.service.api.schemas import EnsemblePublic, JobCreate, JobPublic, Page, RankingRow, RunPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_public(job) -> JobPublic:
    return JobPublic(
        id=job.id, dataset_id=job.dataset_id, zoo=job.zoo_spec, status=job.status, stage=job.stage,
        progress=job.progress or {}, params={k: v for k, v in (job.params or {}).items() if not k.startswith("_")},
        error=job.error, worker_id=job.worker_id, cancel_requested=job.cancel_requested,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
    )


@router.post("", response_model=JobPublic, status_code=202)
def create_job(body: JobCreate, session: SessionDep, _: TokenDep) -> JobPublic:
    """Queue a job; a worker runs it. Answers 202 with the job."""
    from zooens.service.jobs import submit_job
    from zooens.service.pipeline import JobParams, prepare_job_dataset

    from zooens.selection.datasets import load_dataset

    fields = body.model_dump()
    dataset_id, zoo = fields.pop("dataset_id"), fields.pop("zoo")
    params = JobParams(**fields).validate()
    dataset = registry.get_dataset(session, dataset_id)
    prepare_job_dataset(load_dataset(dataset.source), params)  # refuse what cannot run, now
    job = submit_job(session, dataset_id, zoo, params)
    return job_public(job)


@router.get("", response_model=Page[JobPublic], dependencies=[Depends(read_access)])
def list_jobs(
    session: SessionDep,
    status: Annotated[str | None, Query(description="queued, running, succeeded, failed or cancelled")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[JobPublic]:
    rows, count = registry.list_jobs(session, status=status, limit=limit, offset=offset)
    return Page(data=[job_public(j) for j in rows], count=count)


@router.get("/{job_id}", response_model=JobPublic, dependencies=[Depends(read_access)])
def show_job(job_id: JobId, session: SessionDep) -> JobPublic:
    """Status, stage and per-stage progress ({stage: {done, total, current}})."""
    return job_public(registry.get_job(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic, status_code=202)
def cancel_job(job_id: JobId, session: SessionDep, _: TokenDep) -> JobPublic:
    """Queued jobs stop at once; running ones after their current unit. 409 if already finished."""
    return job_public(registry.request_cancel(session, job_id))


@router.get("/{job_id}/ranking", response_model=list[RankingRow], dependencies=[Depends(read_access)])
def job_ranking(job_id: JobId, session: SessionDep) -> list[RankingRow]:
    """Models best first by leave-one-out kNN accuracy, with their best fine-tuned run when known."""
    registry.get_job(session, job_id)
    return [RankingRow(**r) for r in reports.ranking_rows(session, job_id)]


@router.get("/{job_id}/runs", response_model=list[RunPublic], dependencies=[Depends(read_access)])
def job_runs(job_id: JobId, session: SessionDep) -> list[RunPublic]:
    registry.get_job(session, job_id)
    return [RunPublic(**r) for r in reports.run_rows(session, job_id)]


@router.get("/{job_id}/ensemble", response_model=EnsemblePublic, dependencies=[Depends(read_access)],
            responses={404: {"description": "No ensemble yet"}})
def job_ensemble(job_id: JobId, session: SessionDep) -> EnsemblePublic:
    job = registry.get_job(session, job_id)
    view = reports.ensemble_view(session, job_id)
    if view is None:
        raise HTTPException(404, f"Job {job_id} has no ensemble yet (status {job.status}, stage {job.stage}); "
                                 "it is built after the fine-tuning sweep.")
    return EnsemblePublic(**view)
