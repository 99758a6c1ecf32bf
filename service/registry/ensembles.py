"""Ensembles: the weighted members a job's greedy selection chose among its own fine-tune runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zooens.errors import NotFoundError
from zooens.service.db.models import Ensemble, EnsembleMember, FinetuneRun
from zooens.service.registry.jobs import get_job

__all__ = ["create_ensemble", "get_ensemble", "get_job_ensemble"]


def create_ensemble(
    s: Session,
    job_id: int,
    *,
    members: Sequence[tuple[int, float]],
    val_ce: float,
    val_acc: float | None,
    test_acc: float | None,
    size: int,
    loss_curve: list[float],
    max_gflops: float | None = None,
    max_latency_ms: float | None = None,
    gflops: float | None = None,
    latency_ms: float | None = None,
    front: dict[str, Any] | None = None,
) -> Ensemble:
    """Record a job's ensemble: `members` are `(run_id, weight)` in selection order."""
    get_job(s, job_id)
    run_ids = {run_id for run_id, _ in members}
    found = set(s.scalars(select(FinetuneRun.id).where(FinetuneRun.id.in_(run_ids), FinetuneRun.job_id == job_id)))
    if found != run_ids:
        raise NotFoundError(
            f"Job {job_id} has no fine-tune runs {sorted(run_ids - found)}; "
            "an ensemble is built from its own job's runs."
        )
    ens = Ensemble(
        job_id=job_id,
        val_ce=val_ce,
        val_acc=val_acc,
        test_acc=test_acc,
        size=size,
        loss_curve=list(loss_curve),
        max_gflops=max_gflops,
        max_latency_ms=max_latency_ms,
        gflops=gflops,
        latency_ms=latency_ms,
        front=front,
    )
    s.add(ens)
    s.flush()
    for position, (run_id, weight) in enumerate(members):
        s.add(EnsembleMember(ensemble_id=ens.id, run_id=run_id, weight=float(weight), position=position))
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
