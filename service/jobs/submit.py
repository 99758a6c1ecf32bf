"""One way in for every job: the API, `zooens run` and `zooens vtab run` all submit here.

Submission checks what can be checked cheaply: the parameters (already validated by
`JobParams`), the zoo (resolved to weight-set names, stored in the job's `zoo_models`), and
the registered dataset by its recorded class counts, without reading an image. The full
image check runs in the worker (`units.job_dataset`), which also refuses data whose
fingerprint changed since registration.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from zooens.errors import DatasetError
from zooens.selection.datasets import ImageDataset, check_class_counts
from zooens.service import registry
from zooens.service.db.models import Dataset, Job
from zooens.service.jobs.params import JobParams
from zooens.service.jobs.units import MIN_PER_CLASS, no_train_split
from zooens.zoo import WeightSet, resolve_zoo

logger = logging.getLogger(__name__)

__all__ = ["check_dataset", "record_zoo", "register_dataset", "submit_job", "zoo_text"]


def register_dataset(s: Session, source: str, ds: ImageDataset, *, name: str | None = None) -> Dataset:
    """Record a loaded dataset (get-or-create by fingerprint and source)."""
    return registry.get_or_create_dataset(
        s, name=name or ds.name, source=source, fingerprint=ds.fingerprint, classes=list(ds.classes),
        counts=ds.summary().get("counts", {}),
    )


def check_dataset(dataset: Dataset, params: JobParams) -> None:
    """Refuse, from the recorded counts alone, a dataset the job cannot run on."""
    counts: dict[str, dict[str, int]] = dataset.counts or {}
    if "train" not in counts:
        raise no_train_split(dataset.name, counts)
    train = counts["train"]
    check_class_counts(dataset.name, train, min_per_class=MIN_PER_CLASS)
    if "val" not in counts and sum(train.values()) < 3:
        raise DatasetError(f"Dataset {dataset.name!r} has too few images to draw train and val from; add some.")


def zoo_text(zoo: str | list[str]) -> str:
    """A zoo spec as the job stores it: the user's text, names joined by commas."""
    return zoo if isinstance(zoo, str) else ",".join(zoo)


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
    check_dataset(dataset, params)
    zoo_models = record_zoo(s, resolve_zoo(zoo))
    data: dict[str, Any] = params.model_dump()
    job = registry.create_job(s, dataset_id=dataset_id, zoo=zoo_text(zoo), zoo_models=zoo_models, params=data)
    if claim_for is not None:
        registry.set_job_status(s, job.id, "running", worker_id=claim_for)
    logger.info("queued job %s: %d models, strategies %s", job.id, len(zoo_models), params.strategies)
    return job
