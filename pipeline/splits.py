"""The split policy of a job: which images train, validate and test, and what a too-small class does."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from zooens.errors import DatasetError
from zooens.pipeline.params import JobParams
from zooens.selection.datasets import ImageDataset, check_class_counts, validate, vtab_split

__all__ = [
    "MIN_PER_CLASS",
    "check_small_classes",
    "drawn_split_sizes",
    "no_train_split",
    "prepare_job_dataset",
    "prepare_splits",
]

logger = logging.getLogger(__name__)

MIN_PER_CLASS = 2  # leave-one-out kNN needs a neighbour of the same class


def no_train_split(name: str, splits: Iterable[str]) -> DatasetError:
    return DatasetError(
        f"Dataset {name!r} has no 'train' split (it has {sorted(splits)}); "
        "put the training images under train/ or give them without split folders."
    )


def prepare_splits(ds: ImageDataset, params: JobParams) -> ImageDataset:
    """Train/val/test for a job: splits as given when a val split exists, else drawn from train."""
    if "train" not in ds.splits:
        raise no_train_split(ds.name, ds.splits)
    if "val" in ds.splits:
        if params.max_test is not None and "test" in ds.splits:
            return vtab_split(ds, n_train=None, n_val=None, seed=params.seed, max_test=params.max_test)
        return ds
    n_train, n_val = drawn_split_sizes(len(ds.split("train")), params)
    return vtab_split(ds, n_train=n_train, n_val=n_val, seed=params.seed, max_test=params.max_test)


def drawn_split_sizes(n_available: int, params: JobParams) -> tuple[int, int]:
    """(n_train, n_val) drawn from a train split of `n_available` images when there is no val
    split: the job's own sizes, scaled down in proportion when the split is smaller. Submission
    uses it too, to check `k` against the training set the job will really have."""
    n_train, n_val = params.n_train, params.n_val
    if n_train + n_val > n_available:
        n_val = max(1, round(n_available * n_val / (n_train + n_val)))
        n_train = n_available - n_val
    return n_train, n_val


def check_small_classes(name: str, train_counts: dict[str, int], params: JobParams) -> str | None:
    """Apply `params.small_classes` to a train split's per-class counts.

    A class with fewer than MIN_PER_CLASS training examples can never be its own leave-one-out
    neighbour (with one) or be predicted by kNN at all (with none); it is still a class of the
    label space, scored on val and test. 'error' refuses the job (a user dataset with such a class
    is more often a mistake than a design), 'warn' logs it and runs, 'allow' runs silently (VTAB-1k,
    where 800 examples over 397 SUN397 classes leave many with one or none, by design). Returns the
    warning it logged, if any.
    """
    if params.small_classes == "allow":
        check_class_counts(name, train_counts, min_per_class=0)  # some images, whatever the classes
        return None
    try:
        check_class_counts(name, train_counts, min_per_class=MIN_PER_CLASS)
    except DatasetError as exc:
        if params.small_classes == "error":
            raise DatasetError(
                f"{exc} Or run the job with them: small_classes 'warn' or 'allow' (`--small-classes allow`)."
            ) from None
        message = f"{exc} The job runs with them (small_classes=warn)."
        logger.warning("%s", message)
        return message
    return None


def prepare_job_dataset(ds: ImageDataset, params: JobParams) -> ImageDataset:
    """The splits a job uses, checked: labels within the classes, and classes with fewer than two
    training examples as `params.small_classes` says (`check_small_classes`)."""
    prepared = validate(prepare_splits(ds, params), min_per_class=0)
    counts = np.bincount(prepared.split("train").labels, minlength=len(prepared.classes))
    check_small_classes(prepared.name, dict(zip(prepared.classes, (int(n) for n in counts), strict=True)), params)
    return prepared
