"""A job's results: the embedding-cache index, kNN ranking scores and fine-tune runs.

Each write takes the pipeline's record (`zooens.pipeline.records`) and sets the row's columns from
it, so a field is declared once; a renamed or missing field fails when the record is built.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zooens.errors import NotFoundError
from zooens.pipeline.records import RunRecord, ScoreRecord
from zooens.service.db.models import Embedding, FinetuneRun, KnnScore

__all__ = [
    "add_finetune_run",
    "add_knn_score",
    "get_finetune_run",
    "get_ranking",
    "list_finetune_runs",
    "record_embedding",
]


def record_embedding(
    s: Session,
    *,
    cache_key: str,
    model_name: str,
    dataset_fingerprint: str,
    split: str,
    path: str,
    n: int,
    dim: int,
    weights_sha256: str | None = None,
    preprocessing: dict[str, Any] | None = None,
    seconds: float | None = None,
    images_per_s: float | None = None,
) -> Embedding:
    """Index one embedding-cache entry; recording the same cache key again returns the first row."""
    row = s.scalar(select(Embedding).where(Embedding.cache_key == cache_key))
    if row is None:
        row = Embedding(
            cache_key=cache_key,
            model_name=model_name,
            dataset_fingerprint=dataset_fingerprint,
            split=split,
            path=path,
            n=n,
            dim=dim,
            weights_sha256=weights_sha256,
            preprocessing=preprocessing,
            seconds=seconds,
            images_per_s=images_per_s,
        )
        s.add(row)
        s.flush()
    return row


def add_knn_score(s: Session, job_id: int, score: ScoreRecord) -> KnnScore:
    """Record (or replace) a model's ranking scores in a job, keyed by (job, model name)."""
    row = s.scalar(select(KnnScore).where(KnnScore.job_id == job_id, KnnScore.model_name == score.model_name))
    return _write(s, row or KnnScore(job_id=job_id), score.part(ScoreRecord).model_dump())


def _write(s: Session, row: Any, values: dict[str, Any]) -> Any:
    """Set every column of `row` from a record's values (a new row is added), and flush."""
    for name, value in values.items():
        setattr(row, name, value)
    s.add(row)
    s.flush()
    return row


def get_ranking(s: Session, job_id: int) -> list[KnnScore]:
    """A job's kNN scores best first: kNN accuracy, then val accuracy, then model name."""
    return list(
        s.scalars(
            select(KnnScore)
            .where(KnnScore.job_id == job_id)
            .order_by(
                KnnScore.knn_accuracy.desc(), func.coalesce(KnnScore.val_accuracy, 0.0).desc(), KnnScore.model_name
            )
        )
    )


def add_finetune_run(s: Session, job_id: int, run: RunRecord) -> FinetuneRun:
    """Record (or replace) the fine-tune run of a unit, keyed by (job, unit key)."""
    row = s.scalar(select(FinetuneRun).where(FinetuneRun.job_id == job_id, FinetuneRun.unit_key == run.unit_key))
    return _write(s, row or FinetuneRun(job_id=job_id), run.model_dump())


def list_finetune_runs(s: Session, job_id: int) -> list[FinetuneRun]:
    """A job's fine-tune runs in the order they were recorded."""
    return list(s.scalars(select(FinetuneRun).where(FinetuneRun.job_id == job_id).order_by(FinetuneRun.id)))


def get_finetune_run(s: Session, run_id: int) -> FinetuneRun:
    """A fine-tune run by id; NotFoundError if there is none."""
    row = s.get(FinetuneRun, run_id)
    if row is None:
        raise NotFoundError(f"No fine-tune run with id {run_id}.")
    return row
