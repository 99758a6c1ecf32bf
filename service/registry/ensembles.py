"""Ensembles: the weighted members a job's greedy selection chose among its own fine-tune runs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from zooens.errors import NotFoundError
from zooens.pipeline.records import EnsembleFacts, EnsembleRecord
from zooens.service.db.models import Ensemble, EnsembleMember, FinetuneRun
from zooens.service.registry.jobs import get_job

__all__ = ["create_ensemble", "get_ensemble", "get_job_ensemble"]


def create_ensemble(s: Session, job_id: int, ensemble: EnsembleRecord) -> Ensemble:
    """Record a job's ensemble; its members (unit keys, in selection order) must be runs of the job."""
    get_job(s, job_id)
    keys = [m.unit_key for m in ensemble.members]
    run_ids = dict(
        s.execute(select(FinetuneRun.unit_key, FinetuneRun.id).where(FinetuneRun.job_id == job_id)).tuples().all()
    )
    missing = [k for k in keys if k not in run_ids]
    if missing:
        raise NotFoundError(
            f"Job {job_id} has no fine-tune runs {missing}; an ensemble is built from its own job's runs."
        )
    ens = Ensemble(job_id=job_id, **ensemble.part(EnsembleFacts).model_dump())
    s.add(ens)
    s.flush()
    for position, member in enumerate(ensemble.members):
        s.add(
            EnsembleMember(ensemble_id=ens.id, run_id=run_ids[member.unit_key], weight=member.weight, position=position)
        )
    s.flush()
    s.refresh(ens)
    return ens


def get_ensemble(s: Session, ensemble_id: int) -> Ensemble:
    """An ensemble with its members; NotFoundError if there is none."""
    ens = s.get(Ensemble, ensemble_id)
    if ens is None:
        raise NotFoundError(
            f"No ensemble with id {ensemble_id}; a finished job's ensemble is at GET /api/v1/jobs/{{id}}/ensemble."
        )
    return ens


def get_job_ensemble(s: Session, job_id: int) -> Ensemble | None:
    """A job's latest ensemble, or None before its ensemble stage has run."""
    return s.scalar(select(Ensemble).where(Ensemble.job_id == job_id).order_by(Ensemble.id.desc()).limit(1))
