"""A job's results: the embedding-cache index, kNN ranking scores and fine-tune runs.

Each write names every column as a keyword, so a renamed or missing field is a TypeError
instead of a silent NULL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zooens.errors import NotFoundError
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


def add_knn_score(
    s: Session,
    job_id: int,
    *,
    model_name: str,
    k: int | None = None,
    knn_accuracy: float,
    val_accuracy: float | None = None,
    logme: float | None = None,
    embed_seconds: float | None = None,
    images_per_s: float | None = None,
    params: int | None = None,
    embed_dim: int | None = None,
    knn_queries: int | None = None,
) -> KnnScore:
    """Record (or replace) a model's ranking scores in a job, keyed by (job, model name)."""
    row = s.scalar(select(KnnScore).where(KnnScore.job_id == job_id, KnnScore.model_name == model_name))
    if row is None:
        row = KnnScore(job_id=job_id, model_name=model_name)
        s.add(row)
    row.k = k
    row.knn_accuracy = knn_accuracy
    row.val_accuracy = val_accuracy
    row.logme = logme
    row.embed_seconds = embed_seconds
    row.images_per_s = images_per_s
    row.params = params
    row.embed_dim = embed_dim
    row.knn_queries = knn_queries
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


def add_finetune_run(
    s: Session,
    job_id: int,
    *,
    unit_key: str,
    model_name: str,
    strategy: str,
    hparams: dict[str, Any],
    seed: int,
    val_ce: float,
    val_acc: float,
    test_acc: float | None = None,
    seconds: float,
    updated_params: int,
    update_bytes: int,
    artifact_path: str,
    probs_path: str,
    gflops: float | None = None,
    params_count: int | None = None,
    latency_ms: float | None = None,
    backbone_key: str | None = None,
) -> FinetuneRun:
    """Record (or replace) the fine-tune run of a unit, keyed by (job, unit key)."""
    row = s.scalar(select(FinetuneRun).where(FinetuneRun.job_id == job_id, FinetuneRun.unit_key == unit_key))
    if row is None:
        row = FinetuneRun(job_id=job_id, unit_key=unit_key)
        s.add(row)
    row.model_name = model_name
    row.strategy = strategy
    row.hparams = hparams
    row.seed = seed
    row.val_ce = val_ce
    row.val_acc = val_acc
    row.test_acc = test_acc
    row.seconds = seconds
    row.updated_params = updated_params
    row.update_bytes = update_bytes
    row.artifact_path = artifact_path
    row.probs_path = probs_path
    row.gflops = gflops
    row.params_count = params_count
    row.latency_ms = latency_ms
    row.backbone_key = backbone_key
    s.flush()
    return row


def list_finetune_runs(s: Session, job_id: int) -> list[FinetuneRun]:
    """A job's fine-tune runs in the order they were recorded."""
    return list(s.scalars(select(FinetuneRun).where(FinetuneRun.job_id == job_id).order_by(FinetuneRun.id)))


def get_finetune_run(s: Session, run_id: int) -> FinetuneRun:
    """A fine-tune run by id; NotFoundError if there is none."""
    row = s.get(FinetuneRun, run_id)
    if row is None:
        raise NotFoundError(f"No fine-tune run with id {run_id}.")
    return row
