"""Datasets: registered once per (content fingerprint, source)."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from zooens.errors import ConflictError, DatasetError, NotFoundError
from zooens.service.db.models import FINISHED, Dataset, Job
from zooens.service.registry._claims import begin_write, skip_locked

__all__ = [
    "MAX_NAME_LENGTH",
    "check_dataset_name",
    "create_dataset",
    "delete_dataset",
    "find_uploaded_dataset",
    "get_dataset",
    "get_or_create_dataset",
    "list_datasets",
]

MAX_NAME_LENGTH = 200
"""Longest dataset name (the column holds 255; PostgreSQL refuses longer ones with an error)."""


def _control_characters(text: str) -> list[str]:
    return sorted({repr(ch) for ch in text if unicodedata.category(ch) in ("Cc", "Cs")})


def check_dataset_name(name: str) -> str:
    """`name` without surrounding spaces; DatasetError if empty, over MAX_NAME_LENGTH or holding
    control characters (PostgreSQL refuses a NUL byte in text)."""
    cleaned = name.strip()
    if not cleaned:
        raise DatasetError("The dataset name is empty; give a name or leave the field out to use the file name.")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise DatasetError(
            f"The dataset name has {len(cleaned)} characters, more than {MAX_NAME_LENGTH}; give a shorter name."
        )
    bad = _control_characters(cleaned)
    if bad:
        raise DatasetError(
            f"The dataset name holds control character(s) {', '.join(bad)}; use printable characters only."
        )
    return cleaned


def _check_row_text(source: str, classes: list[str]) -> None:
    """Text PostgreSQL would refuse (a NUL byte), refused as bad data rather than a database error."""
    if "\x00" in source:
        raise DatasetError("The dataset's path holds a NUL byte; give a plain path.")
    bad = [c for c in classes if _control_characters(str(c))]
    if bad:
        raise DatasetError(f"Class name(s) {[str(c) for c in bad[:10]]} hold control characters; rename those classes.")


def _find_dataset(s: Session, fingerprint: str, source: str) -> Dataset | None:
    return s.scalar(select(Dataset).where(Dataset.fingerprint == fingerprint, Dataset.source == source))


def create_dataset(
    s: Session,
    *,
    name: str,
    source: str,
    fingerprint: str,
    classes: list[str],
    counts: dict[str, Any],
    storage_path: str | None = None,
) -> Dataset:
    """Register a dataset; ConflictError if the same content from the same source exists.

    DatasetError for a bad name or text the database cannot hold (see `check_dataset_name`).
    """
    name = check_dataset_name(name)
    _check_row_text(source, classes)
    existing = _find_dataset(s, fingerprint, source)
    if existing is not None:
        raise ConflictError(
            f"Dataset {existing.name!r} (id {existing.id}) already holds this content from {source!r}; "
            "use it instead of registering it again."
        )
    row = Dataset(
        name=name, source=source, fingerprint=fingerprint, classes=classes, counts=counts, storage_path=storage_path
    )
    s.add(row)
    s.flush()
    return row


def get_or_create_dataset(
    s: Session,
    *,
    name: str,
    source: str,
    fingerprint: str,
    classes: list[str],
    counts: dict[str, Any],
    storage_path: str | None = None,
) -> Dataset:
    """The dataset with this fingerprint and source, registered first if new."""
    row = _find_dataset(s, fingerprint, source)
    if row is None:
        row = create_dataset(
            s,
            name=name,
            source=source,
            fingerprint=fingerprint,
            classes=classes,
            counts=counts,
            storage_path=storage_path,
        )
    return row


def get_dataset(s: Session, dataset_id: int) -> Dataset:
    """A dataset by id; NotFoundError if there is none."""
    row = s.get(Dataset, dataset_id)
    if row is None:
        raise NotFoundError(f"No dataset with id {dataset_id}; list them with GET /api/v1/datasets.")
    return row


def list_datasets(s: Session, *, limit: int = 100, offset: int = 0) -> tuple[list[Dataset], int]:
    """A page of datasets, newest first, and the total count."""
    count = s.scalar(select(func.count(Dataset.id))) or 0
    rows = list(s.scalars(select(Dataset).order_by(Dataset.id.desc()).limit(limit).offset(offset)))
    return rows, count


def find_uploaded_dataset(s: Session, fingerprint: str) -> Dataset | None:
    """The first uploaded dataset (one with stored files) holding content with this fingerprint, if any."""
    return s.scalar(
        select(Dataset)
        .where(Dataset.fingerprint == fingerprint, Dataset.storage_path.is_not(None))
        .order_by(Dataset.id)
        .limit(1)
    )


def delete_dataset(s: Session, dataset_id: int, *, with_jobs: bool = False) -> tuple[Dataset, list[int]]:
    """Delete a dataset's row; the deleted row (detached, for its files) and the ids of the jobs deleted with it.

    ConflictError while a queued or running job uses it, and, unless `with_jobs`, while any
    finished job does (their results would go with it). The dataset's row is locked first
    (PostgreSQL `FOR UPDATE`, SQLite's write lock), so no job can be queued on it meanwhile.
    """
    begin_write(s)
    query = select(Dataset).where(Dataset.id == dataset_id)
    if skip_locked(s):
        query = query.with_for_update()
    row = s.scalar(query)
    if row is None:
        raise NotFoundError(
            f"No dataset with id {dataset_id}; list them with `zooens datasets list` or GET /api/v1/datasets."
        )
    jobs = list(s.execute(select(Job.id, Job.status).where(Job.dataset_id == dataset_id).order_by(Job.id)))
    busy = [job_id for job_id, status in jobs if status not in FINISHED]
    if busy:
        raise ConflictError(
            f"Dataset {dataset_id} is used by unfinished job(s) {_ids(busy)}; cancel them first "
            "(`zooens jobs cancel JOB`), then delete the dataset."
        )
    finished = [job_id for job_id, _ in jobs]
    if finished and not with_jobs:
        raise ConflictError(
            f"Dataset {dataset_id} has {len(finished)} finished job(s) ({_ids(finished)}); delete "
            "them with it: `zooens datasets delete {dataset_id} --with-jobs` (API: ?with_jobs=true)."
        )
    s.execute(delete(Job).where(Job.dataset_id == dataset_id).execution_options(synchronize_session=False))
    s.execute(delete(Dataset).where(Dataset.id == dataset_id).execution_options(synchronize_session=False))
    s.expunge(row)
    return row, finished


def _ids(ids: list[int], shown: int = 10) -> str:
    text = ", ".join(str(i) for i in ids[:shown])
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
