"""Datasets: registered once per (content fingerprint, source)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zooens.errors import ConflictError, NotFoundError
from zooens.service.db.models import Dataset

__all__ = ["create_dataset", "get_dataset", "get_or_create_dataset", "list_datasets"]


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
    """Register a dataset; ConflictError if the same content from the same source exists."""
    existing = _find_dataset(s, fingerprint, source)
    if existing is not None:
        raise ConflictError(
            f"Dataset {existing.name!r} (id {existing.id}) already holds this content from {source!r}; "
            "use it instead of registering it again."
        )
    row = Dataset(name=name, source=source, fingerprint=fingerprint, classes=classes, counts=counts,
                  storage_path=storage_path)
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
        row = create_dataset(s, name=name, source=source, fingerprint=fingerprint, classes=classes,
                             counts=counts, storage_path=storage_path)
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
