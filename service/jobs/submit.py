"""One way in for every job: the API, `zooens run` and `zooens vtab run` all submit here, and a
job's later lives (`resume_job`, `retry_job`) go through the same claim.

Submission checks what can be checked cheaply, before any row is written: the parameters
(already validated by `JobParams`, strategy options included), the zoo (resolved to weight-set
names, stored in the job's `zoo_models`; every model must have weights here), and the
registered dataset by its recorded class counts, without reading an image (train split,
classes too small for leave-one-out, `k` against the training set, `n_train`/`n_val` against
the images). The full image check runs in the worker (`units.job_dataset`), which also
refuses data whose fingerprint changed since registration.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.hub
from huggingface_hub import constants as hf_constants
from sqlalchemy.orm import Session

from zooens.errors import ConfigError, DatasetError, MissingWeightsError
from zooens.selection.datasets import ImageDataset
from zooens.service import registry
from zooens.service.db.models import Dataset, Job
from zooens.service.jobs.params import JobParams
from zooens.service.jobs.units import check_small_classes, drawn_split_sizes, no_train_split
from zooens.zoo import DEFAULT_TAPS, WeightSet, resolve_zoo

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_ZOO_MODELS",
    "check_dataset",
    "check_split_sizes",
    "check_zoo",
    "record_zoo",
    "register_dataset",
    "resume_job",
    "retry_job",
    "submit_job",
    "weight_places",
    "zoo_text",
]

MAX_ZOO_MODELS = 256
"""Most models one job may rank: each is a unit of embedding work that holds the worker."""


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


def check_dataset(dataset: Dataset, params: JobParams) -> None:
    """Refuse, from the recorded counts alone, a dataset the job cannot run on."""
    counts: dict[str, dict[str, int]] = dataset.counts or {}
    if "train" not in counts:
        raise no_train_split(dataset.name, counts)
    train = counts["train"]
    check_small_classes(dataset.name, train, params)
    if "val" not in counts and sum(train.values()) < 3:
        raise DatasetError(f"Dataset {dataset.name!r} has too few images to draw train and val from; add some.")
    check_split_sizes(dataset.name, train, has_val="val" in counts, params=params)
    check_k(dataset.name, train, has_val="val" in counts, params=params)


def check_split_sizes(name: str, train: dict[str, int], *, has_val: bool, params: JobParams) -> None:
    """`n_train`/`n_val` against the data, before the job exists.

    They apply only when train and val are drawn from the train split (no val split). When they
    ask for more images than the split holds, the job draws fewer, in proportion
    (`drawn_split_sizes`): with the default sizes that is the normal case for a small dataset,
    so it is a warning stating the sizes used; sizes the caller changed from the defaults are
    taken as asked for explicitly, and asking explicitly for more than exists is refused. With
    a val split, sizes changed from the defaults are ignored, with a warning.
    """
    fields = JobParams.model_fields
    explicit = params.n_train != fields["n_train"].default or params.n_val != fields["n_val"].default
    if has_val:
        if explicit:
            logger.warning(
                "dataset %r has a val split: n_train=%d and n_val=%d are not used (they size the split "
                "drawn from train when there is no val split)",
                name,
                params.n_train,
                params.n_val,
            )
        return
    n_available = sum(int(v) for v in train.values())
    wanted = params.n_train + params.n_val
    if wanted <= n_available:
        return
    if explicit:
        raise ConfigError(
            f"n_train={params.n_train} + n_val={params.n_val} = {wanted} images, but dataset {name!r} has "
            f"{n_available} training images and no val split; lower --n-train/--n-val (their sum at most "
            f"{n_available}), or leave both at their defaults to draw in proportion."
        )
    n_train, n_val = drawn_split_sizes(n_available, params)
    logger.warning(
        "dataset %r has %d training images and no val split: the job draws n_train=%d and n_val=%d "
        "from them (the defaults %d + %d do not fit)",
        name,
        n_available,
        n_train,
        n_val,
        params.n_train,
        params.n_val,
    )


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
    if not train:
        return
    smallest_class, smallest = min(train.items(), key=lambda item: int(item[1]))
    expected = int(smallest) if has_val else int(smallest) * n_train // max(1, n_available)  # drawn at random
    if params.k > expected:
        about = "" if has_val else "about "
        logger.warning(
            "k=%d is more than the %s%d training examples of class %r, the smallest of dataset %r: that "
            "class cannot win a kNN majority vote; lower k to at most %d for a fair ranking",
            params.k,
            about,
            expected,
            smallest_class,
            name,
            max(1, expected),
        )


def zoo_text(zoo: str | list[str]) -> str:
    """A zoo spec as the job stores it: the user's text, names joined by commas."""
    return zoo if isinstance(zoo, str) else ",".join(zoo)


def check_zoo(zoo: str | list[str], weight_sets: list[WeightSet]) -> None:
    """Refuse a zoo too large for one job, or naming models whose weights are not on this machine
    (the job would fail at the first of them, after queueing every other). The message is short
    whatever the zoo's size: how many matched, how many lack weights, where zooens looks, how to add them."""
    if len(weight_sets) > MAX_ZOO_MODELS:
        raise ConfigError(
            f"The zoo {zoo_text(zoo)!r} matched {len(weight_sets)} models; a job ranks at most {MAX_ZOO_MODELS}. "
            "Narrow it: 'available' (models with weights here), a pattern such as 'convnext*', or a list of names."
        )
    missing = [ws for ws in weight_sets if not ws.weights_present]
    if not missing:
        return
    n = len(weight_sets)
    if len(missing) == n:
        which = "none has" if n > 1 else "it has no"
        head = f"The zoo {zoo_text(zoo)!r} matched {n} model{'s' if n > 1 else ''}; {which} weights on this machine"
    else:
        shown = ", ".join(ws.name for ws in missing[:3]) + (", ..." if len(missing) > 3 else "")
        head = (
            f"The zoo {zoo_text(zoo)!r} matched {n} models; {len(missing)} of them "
            f"{'has' if len(missing) == 1 else 'have'} no weights on this machine ({shown})"
        )
    raise MissingWeightsError(
        f"{head}. zooens looks in {weight_places(missing)}. Add a weights file with "
        "`zooens zoo add NAME --arch ARCH --weights FILE`, or use the zoo 'available' (models with weights here)."
    )


def weight_places(weight_sets: list[WeightSet], most: int = 3) -> str:
    """Where zooens looks for these weight sets' files, summarised (not one path per model)."""
    places: list[str] = []
    for ws in weight_sets:
        source = ws.source
        if source.kind == "hub":
            if source.hub_id:
                places.append(f"the Hugging Face hub cache ({hf_constants.HF_HUB_CACHE})")
            if source.url:
                places.append(f"torch hub's checkpoints ({torch.hub.get_dir()}/checkpoints)")
        elif source.kind == "package":
            places.append(f"the Python package {source.package!r}")
        elif source.kind == "file":
            places.append(
                f"the file {source.path}"
                if len(weight_sets) == 1
                else "the files of the user zoo (`zooens zoo show NAME`)"
            )
        else:
            places.append("nowhere (no weights are named)")
    distinct = list(dict.fromkeys(places))
    shown = distinct[:most] + (["elsewhere"] if len(distinct) > most else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


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
    weight_sets = resolve_zoo(zoo, taps=DEFAULT_TAPS if params.taps == "auto" else 0)
    check_zoo(zoo, weight_sets)
    return _queue(s, dataset_id, zoo_text(zoo), weight_sets, params, claim_for)


def _queue(
    s: Session, dataset_id: int, zoo: str, weight_sets: list[WeightSet], params: JobParams, claim_for: str | None
) -> Job:
    zoo_models = record_zoo(s, weight_sets)
    data: dict[str, Any] = params.model_dump()
    job = registry.create_job(s, dataset_id=dataset_id, zoo=zoo, zoo_models=zoo_models, params=data)
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
    check_dataset(dataset, params)
    weight_sets = resolve_zoo(list(old.zoo_models or []) or old.zoo)
    check_zoo(old.zoo, weight_sets)
    job = _queue(s, old.dataset_id, old.zoo, weight_sets, params, claim_for)
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
