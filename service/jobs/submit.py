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

from zooens.errors import ConfigError, DatasetError, MissingWeightsError
from zooens.selection.datasets import ImageDataset, check_class_counts
from zooens.service import registry
from zooens.service.db.models import Dataset, Job
from zooens.service.jobs.params import JobParams
from zooens.service.jobs.units import MIN_PER_CLASS, drawn_split_sizes, no_train_split
from zooens.zoo import WeightSet, resolve_zoo

logger = logging.getLogger(__name__)

__all__ = ["MAX_ZOO_MODELS", "check_dataset", "check_zoo", "record_zoo", "register_dataset", "submit_job", "zoo_text"]

MAX_ZOO_MODELS = 256
"""Most models one job may rank: each is a unit of embedding work that holds the worker."""


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
    check_k(dataset.name, train, has_val="val" in counts, params=params)


def check_k(name: str, train: dict[str, int], *, has_val: bool, params: JobParams) -> None:
    """Refuse a `k` the job's training set cannot serve; warn when it outnumbers the smallest class.

    The leave-one-out score leaves the query out, so `k` must be smaller than the number of
    training examples (with more, every query votes over the whole set and the ranking is
    meaningless). A `k` above the smallest class is legal, as in any kNN, but that class can
    never win a vote by majority: logged as a warning, not refused, because class imbalance
    is the user's data.
    """
    n_available = sum(int(v) for v in train.values())
    n_train = n_available if has_val else drawn_split_sizes(n_available, params)[0]
    if params.k >= n_train:
        raise ConfigError(
            f"k={params.k} neighbours but the job trains on {n_train} examples of dataset {name!r}; leave-one-out "
            f"kNN needs k < {n_train}: lower k (e.g. {max(1, min(10, n_train - 1))}) or add training images."
        )
    smallest = min((int(v) for v in train.values()), default=0)
    if has_val and params.k > smallest:
        logger.warning("k=%d is larger than the smallest class of dataset %r (%d examples): that class cannot win "
                       "a majority vote", params.k, name, smallest)


def zoo_text(zoo: str | list[str]) -> str:
    """A zoo spec as the job stores it: the user's text, names joined by commas."""
    return zoo if isinstance(zoo, str) else ",".join(zoo)


def check_zoo(zoo: str | list[str], weight_sets: list[WeightSet]) -> None:
    """Refuse a zoo too large for one job, or naming models whose weights are not on this machine
    (the job would fail at the first of them, after queueing every other)."""
    if len(weight_sets) > MAX_ZOO_MODELS:
        raise ConfigError(
            f"The zoo {zoo_text(zoo)!r} matched {len(weight_sets)} models; a job ranks at most {MAX_ZOO_MODELS}. "
            "Narrow it: 'available' (models with weights here), a pattern such as 'convnext*', or a list of names."
        )
    missing = [ws.name for ws in weight_sets if not ws.weights_present]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise MissingWeightsError(
            f"The zoo {zoo_text(zoo)!r} names {len(missing)} model(s) without weights on this machine: {shown}. "
            "Put their weights where `zooens zoo show NAME` says zooens looks, or use the zoo 'available'."
        )


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
    weight_sets = resolve_zoo(zoo)
    check_zoo(zoo, weight_sets)
    zoo_models = record_zoo(s, weight_sets)
    data: dict[str, Any] = params.model_dump()
    job = registry.create_job(s, dataset_id=dataset_id, zoo=zoo_text(zoo), zoo_models=zoo_models, params=data)
    if claim_for is not None:
        registry.set_job_status(s, job.id, "running", worker_id=claim_for)
    logger.info("queued job %s: %d models, strategies %s", job.id, len(zoo_models), params.strategies)
    return job
