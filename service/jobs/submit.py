"""One way in for every job: the API, `zooens run` and `zooens vtab run` all submit here, and a
job's later lives (`resume_job`, `retry_job`) go through the same claim.

Submission checks what can be checked cheaply, before any row is written: the parameters
(already validated by `JobParams`, strategy options included), the zoo (resolved to weight-set
names, stored in the job's `zoo_models`; every model must have weights here), and the
registered dataset by its recorded class counts, without reading an image (train split,
classes too small for leave-one-out, `k` against the training set, `n_train`/`n_val` against
the images; `zooens.pipeline.checks`), and what the job's strategies and budget need of the zoo
(`pipeline.checks.check_job`: `aft` needs two selected models; `max_gflops` must fit the zoo's cheapest
model, counted without weights). Nothing is written before they pass. The full image check runs in the
worker (`units.job_dataset`), which also refuses data whose fingerprint changed since registration.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from zooens.pipeline.checks import check_counts, check_job, check_zoo, job_zoo, zoo_text
from zooens.pipeline.params import JobParams
from zooens.selection.datasets import ImageDataset
from zooens.service import registry
from zooens.service.db.models import Dataset, Job
from zooens.zoo import WeightSet, resolve_zoo

logger = logging.getLogger(__name__)

__all__ = ["check_dataset", "record_zoo", "register_dataset", "resume_job", "retry_job", "submit_job"]


def register_dataset(s: Session, source: str, ds: ImageDataset, *, name: str | None = None) -> Dataset:
    """Record a loaded dataset (get-or-create by fingerprint and source)."""
    return registry.get_or_create_dataset(
        s,
        name=name or ds.name,
        source=source,
        fingerprint=ds.fingerprint,
        classes=list(ds.classes),
        counts=ds.summary().get("counts", {}),
    )


def check_dataset(dataset: Dataset, params: JobParams) -> list[str]:
    """Refuse, from the recorded counts alone, a dataset the job cannot run on (`pipeline.checks.check_counts`);
    the warnings the checks raised, which the job records."""
    return check_counts(dataset.name, dataset.counts or {}, params)


def record_zoo(s: Session, weight_sets: list[WeightSet]) -> list[str]:
    """Store each weight set's facts; the names, in the zoo's order."""
    for ws in weight_sets:
        registry.upsert_zoo_model(s, ws.to_dict())
    return [ws.name for ws in weight_sets]


def submit_job(
    s: Session, dataset_id: int, zoo: str | list[str], params: JobParams, *, claim_for: str | None = None
) -> Job:
    """Check what can be checked now, then queue the job.

    With `claim_for`, the job is created already `running` for that worker, in the same
    transaction, so no polling worker can take it (`zooens run` and `zooens vtab run` run
    the jobs they submit themselves).
    """
    dataset = registry.get_dataset(s, dataset_id)
    warnings = check_dataset(dataset, params)
    weight_sets, zoo_warnings = job_zoo(zoo, params)
    return _queue(s, dataset_id, zoo_text(zoo), weight_sets, params, claim_for, warnings + zoo_warnings)


def _queue(
    s: Session,
    dataset_id: int,
    zoo: str,
    weight_sets: list[WeightSet],
    params: JobParams,
    claim_for: str | None,
    warnings: list[str],
) -> Job:
    zoo_models = record_zoo(s, weight_sets)
    data: dict[str, Any] = params.model_dump()
    # the submission checks' warnings are the job's from the start, beside those its ensemble adds
    job = registry.create_job(s, dataset_id=dataset_id, zoo=zoo, zoo_models=zoo_models, params=data, warnings=warnings)
    if claim_for is not None:
        registry.set_job_status(s, job.id, "running", worker_id=claim_for)
    logger.info("queued job %s: %d models, strategies %s", job.id, len(zoo_models), params.strategies)
    return job


def retry_job(s: Session, job_id: int, *, claim_for: str | None = None) -> Job:
    """A new job with a finished job's dataset, models and parameters; the old job is kept.

    The new job is checked like any submission (the models' weights must still be here). It
    runs the models the old job resolved its zoo to, under the same zoo text. ConflictError
    for a queued or running job (cancel it first); `claim_for` as in `submit_job`.
    """
    old = registry.check_finished(s, job_id, "retry")
    params = JobParams.model_validate(old.params)
    dataset = registry.get_dataset(s, old.dataset_id)
    warnings = check_dataset(dataset, params)
    weight_sets = resolve_zoo(list(old.zoo_models or []) or old.zoo)
    check_zoo(old.zoo, weight_sets, pull=params.pull)
    warnings += check_job(params, weight_sets)
    job = _queue(s, old.dataset_id, old.zoo, weight_sets, params, claim_for, warnings)
    logger.info("job %s retries job %s", job.id, job_id)
    return job


def resume_job(s: Session, job_id: int, *, claim_for: str | None = None) -> Job:
    """Put a failed or cancelled job back in the queue, its finished units kept (`registry.reopen_job`).

    With `claim_for`, the job is claimed for that worker in the same transaction (as `submit_job`
    does), so `zooens jobs resume` runs it here and no polling worker takes it.
    """
    job = registry.reopen_job(s, job_id)
    if claim_for is not None:
        job = registry.set_job_status(s, job_id, "running", worker_id=claim_for)
    return job
