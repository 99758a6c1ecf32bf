"""Scoring and ranking zoo models by how well their frozen embeddings separate the classes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd

from zooens import zoo
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset
from zooens.selection.embed import embed_with_cache
from zooens.selection.knn import LOO_MAX_QUERIES, knn_accuracy, knn_loo, logme_score, resolve_k
from zooens.zoo import WeightSet

logger = logging.getLogger(__name__)

__all__ = ["ModelScore", "score_model", "ranking_table", "RANKING_COLUMNS"]

RANKING_COLUMNS = [
    "model_name",
    "knn_accuracy",
    "val_accuracy",
    "logme",
    "embed_seconds",
    "images_per_s",
    "params",
    "embed_dim",
    "cached",
    "k",
    "knn_queries",
    "knn1_accuracy",
]


@dataclass
class ModelScore:
    """How well one model's frozen embeddings separate a dataset's classes, and what it cost.

    `knn_accuracy`: leave-one-out kNN on train; `val_accuracy`: train-to-val kNN (NaN without a
    val split); `logme`: LogME on train; `embed_seconds`: wall time of getting the embeddings
    (cache reads included); `images_per_s`: forward-pass throughput (None when all cached);
    `knn_queries`: how many training points the leave-one-out estimate held out, the number of
    training examples unless that is over `knn.LOO_MAX_QUERIES` (then a seeded stratified
    subsample; None: not recorded); `k`: the neighbours behind `knn_accuracy` and `val_accuracy`
    (`auto_k` of the training class sizes when the job asked for "auto"); `knn1_accuracy`:
    leave-one-out 1-NN accuracy on the same queries, from the same neighbour search (None: not
    recorded).
    """

    model_name: str
    knn_accuracy: float
    val_accuracy: float
    logme: float
    embed_seconds: float
    images_per_s: float | None
    params: int | None
    embed_dim: int
    cached: bool
    k: int
    knn_queries: int | None = None
    knn1_accuracy: float | None = None


def score_model(
    ws_or_name: str | WeightSet,
    ds: ImageDataset,
    *,
    k: int | Literal["auto"] = 10,
    cache: EmbeddingCache,
    resolution: int | None = None,
    preprocessing: str = "model",
    device: str = "cpu",
    progress: bool = True,
    max_queries: int | None = LOO_MAX_QUERIES,
    family: Sequence[str | WeightSet] = (),
) -> ModelScore:
    """Embed train and val (through the cache) and score: LOO kNN (and LOO 1-NN from the same search),
    train-to-val kNN, LogME. `k="auto"` resolves here, from the training labels (`knn.auto_k`), and
    the score records the k used.

    The kNN search runs on `device` (torch on CUDA, FAISS on the CPU: `knn.resolve_backend`);
    over `max_queries` training examples the LOO estimate uses that many stratified queries. `family`: the
    model's layer taps (or a tap's model and fellow taps) the caller will score too, embedded in the same
    forward pass (`embed_with_cache`)."""
    ws = zoo.describe(ws_or_name) if isinstance(ws_or_name, str) else ws_or_name
    started = time.perf_counter()
    results = {
        split: embed_with_cache(
            ws,
            ds,
            split,
            cache=cache,
            resolution=resolution,
            preprocessing=preprocessing,
            device=device,
            progress=progress,
            family=family,
        )
        for split in ("train", "val")
        if split in ds.splits
    }
    embed_seconds = time.perf_counter() - started
    train = results["train"].embeddings
    y = ds.split("train").labels
    k = resolve_k(k, y)
    n_images = sum(len(ds.split(s)) for s, r in results.items() if not r.cached)
    compute_seconds = sum(r.seconds for r in results.values() if not r.cached)
    val_acc = float("nan")
    if "val" in results:
        val_acc = knn_accuracy(train, y, results["val"].embeddings, ds.split("val").labels, k, device=device)
    loo = knn_loo(train, y, k, max_queries=max_queries, device=device)
    score = ModelScore(
        model_name=ws.name,
        knn_accuracy=loo.accuracy,
        val_accuracy=val_acc,
        logme=logme_score(train, y),
        embed_seconds=embed_seconds,
        images_per_s=(n_images / compute_seconds) if n_images and compute_seconds > 0 else None,
        params=ws.num_params,
        embed_dim=int(train.shape[1]),
        cached=all(r.cached for r in results.values()),
        k=k,
        knn_queries=loo.n_queries,
        knn1_accuracy=loo.knn1_accuracy,
    )
    logger.info(
        "%s: kNN@%d %.4f, kNN@1 %.4f, val %.4f, LogME %.3f",
        ws.name,
        k,
        score.knn_accuracy,
        loo.knn1_accuracy,
        score.val_accuracy,
        score.logme,
    )
    return score


def _descending(value: float | None) -> float:
    """Sort key for 'higher first' with NaN last (NaN compares false and would scramble a sort)."""
    return math.inf if value is None or math.isnan(value) else -value


def ranking_table(scores: list[ModelScore]) -> pd.DataFrame:
    """Best first: kNN accuracy, then train-to-val accuracy, then name; one row per score."""
    rows: list[dict[str, Any]] = sorted(
        (asdict(s) for s in scores),
        key=lambda r: (_descending(r["knn_accuracy"]), _descending(r["val_accuracy"]), r["model_name"]),
    )
    return pd.DataFrame(rows, columns=RANKING_COLUMNS).reset_index(drop=True)
