"""The read side of a job, built once for the CLI, the API and the dashboard.

Each view is a typed record (the API answers with these very models): `JobPublic`,
`RankingRow` (one per model, best kNN first, with its best fine-tuned run), `RunPublic`,
`EnsemblePublic`, and `JobReport`, all four at once. Rows are read from the ORM objects by
attribute (`from_attributes`), never copied key by key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from sqlalchemy.orm import Session

from zooens.service import registry
from zooens.service.db.models import FinetuneRun, Job

__all__ = [
    "EnsembleMemberPublic",
    "EnsemblePublic",
    "JobPublic",
    "JobReport",
    "RankingRow",
    "RunPublic",
    "best_single",
    "ensemble_view",
    "job_public",
    "job_report",
    "ranking_rows",
    "run_rows",
]


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int = Field(ge=1, le=2**31 - 1)
    zoo: str = Field(description="The zoo as the user gave it: a set name, a glob, or names.")
    zoo_models: list[str] = Field(description="The weight sets the zoo resolved to, in order.")
    status: str
    stage: str | None
    progress: dict[str, Any]
    params: dict[str, Any]
    error: str | None
    worker_id: str | None
    cancel_requested: bool
    ranking_audit: dict[str, Any] | None = Field(
        default=None,
        description="How well the kNN ranking and LogME predicted the fine-tuned order: per predictor, Spearman and "
        "Kendall correlations with the models' best fine-tuned val accuracy, and the regret of its top-K.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @field_validator("progress", mode="before")
    @classmethod
    def _no_progress_yet(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return value or {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_seconds(self) -> float | None:
        """Wall time from the first unit's start to the end (None before it starts, and for a job still
        running: the dashboard and CLI show its elapsed time from `started_at`)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round(max(0.0, (self.finished_at - self.started_at).total_seconds()), 3)


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_name: str
    strategy: str
    hparams: dict[str, Any]
    val_ce: float
    val_acc: float
    test_acc: float | None
    seconds: float
    updated_params: int
    update_bytes: int
    gflops: float | None = Field(default=None, description="GFLOPs of one image's forward pass (multiply-add = 2).")
    params_count: int | None = Field(default=None, description="Parameters of the inference network.")
    latency_ms: float | None = Field(default=None, description="Batch-1 latency on the worker's device.")
    backbone_key: str | None = Field(default=None, description="Runs with the same key share one forward pass.")


class RankingRow(BaseModel):
    rank: int
    model_name: str
    knn_accuracy: float
    val_accuracy: float | None
    logme: float | None
    finetuned_val_acc: float | None
    finetuned_val_ce: float | None
    finetuned_test_acc: float | None
    best_strategy: str | None
    updated_params: int | None
    update_bytes: int | None
    params: int | None
    embed_dim: int | None
    embed_seconds: float | None
    images_per_s: float | None
    knn_queries: int | None = Field(
        default=None,
        description="Leave-one-out queries behind knn_accuracy (fewer than the training examples when subsampled).",
    )


class EnsembleMemberPublic(BaseModel):
    run_id: int
    model_name: str
    strategy: str
    hparams: dict[str, Any]
    weight: float
    val_ce: float
    val_acc: float
    test_acc: float | None
    updated_params: int
    update_bytes: int


class EnsemblePublic(BaseModel):
    id: int
    job_id: int
    size: int
    val_ce: float
    val_acc: float | None
    test_acc: float | None
    loss_curve: list[float]
    members: list[EnsembleMemberPublic]
    max_gflops: float | None = None
    max_latency_ms: float | None = None
    gflops: float | None = Field(default=None, description="GFLOPs per image of the distinct forward passes.")
    latency_ms: float | None = Field(default=None, description="Summed batch-1 latency of the distinct passes.")
    front: dict[str, Any] | None = Field(
        default=None,
        description="Accuracy against cost: `path` (each prefix of the greedy path) and `front` (the best ensemble "
        "under each budget, Pareto-optimal), each point with its members (unit keys), cost, val "
        "cross-entropy and test accuracy; `metric` names the cost.",
    )


class JobReport(BaseModel):
    job: JobPublic
    ranking: list[RankingRow]
    runs: list[RunPublic]
    ensemble: EnsemblePublic | None
    best_single: RunPublic | None = Field(
        description="The best single run by validation cross-entropy (ties: the earlier run) among the ensemble's "
        "candidates (the top-K's runs, within the budget), the run the ensemble is compared with "
        "everywhere (CLI, API, dashboard, VTAB tables)."
    )


def job_public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job)


def _best_runs(runs: list[FinetuneRun]) -> dict[str, FinetuneRun]:
    best: dict[str, FinetuneRun] = {}
    for run in runs:
        current = best.get(run.model_name)
        if current is None or run.val_ce < current.val_ce:
            best[run.model_name] = run
    return best


def ranking_rows(s: Session, job_id: int) -> list[RankingRow]:
    """One row per model, best kNN first, with the best fine-tuned run of that model when known."""
    best = _best_runs(registry.list_finetune_runs(s, job_id))
    rows = []
    for rank, score in enumerate(registry.get_ranking(s, job_id), start=1):
        run = best.get(score.model_name)
        rows.append(
            RankingRow(
                rank=rank,
                model_name=score.model_name,
                knn_accuracy=score.knn_accuracy,
                val_accuracy=score.val_accuracy,
                logme=score.logme,
                finetuned_val_acc=None if run is None else run.val_acc,
                finetuned_val_ce=None if run is None else run.val_ce,
                finetuned_test_acc=None if run is None else run.test_acc,
                best_strategy=None if run is None else run.strategy,
                updated_params=None if run is None else run.updated_params,
                update_bytes=None if run is None else run.update_bytes,
                params=score.params,
                embed_dim=score.embed_dim,
                embed_seconds=score.embed_seconds,
                images_per_s=score.images_per_s,
                knn_queries=score.knn_queries,
            )
        )
    return rows


def run_rows(s: Session, job_id: int) -> list[RunPublic]:
    return [RunPublic.model_validate(r) for r in registry.list_finetune_runs(s, job_id)]


def ensemble_view(s: Session, job_id: int) -> EnsemblePublic | None:
    ens = registry.get_job_ensemble(s, job_id)
    if ens is None:
        return None
    runs = {r.id: r for r in registry.list_finetune_runs(s, job_id)}
    members = []
    for m in sorted(ens.members, key=lambda m: m.position):
        run = runs[m.run_id]
        members.append(
            EnsembleMemberPublic(
                run_id=run.id,
                model_name=run.model_name,
                strategy=run.strategy,
                hparams=run.hparams,
                weight=m.weight,
                val_ce=run.val_ce,
                val_acc=run.val_acc,
                test_acc=run.test_acc,
                updated_params=run.updated_params,
                update_bytes=run.update_bytes,
            )
        )
    return EnsemblePublic(
        id=ens.id,
        job_id=job_id,
        size=ens.size,
        val_ce=ens.val_ce,
        val_acc=ens.val_acc,
        test_acc=ens.test_acc,
        loss_curve=ens.loss_curve,
        members=members,
        max_gflops=ens.max_gflops,
        max_latency_ms=ens.max_latency_ms,
        gflops=ens.gflops,
        latency_ms=ens.latency_ms,
        front=ens.front,
    )


def best_single(runs: list[RunPublic]) -> RunPublic | None:
    """The run with the lowest validation cross-entropy (the earlier on a tie), or None."""
    return min(runs, key=lambda r: (r.val_ce, r.id), default=None)


def ensemble_candidates(runs: list[RunPublic], ranking: list[RankingRow], params: dict[str, Any]) -> list[RunPublic]:
    """The runs the ensemble chose from: those of the top-K models (not the ranking audit's extra models),
    within the job's inference budget when it has one (a run whose cost is unknown is kept)."""
    top_k = int(params.get("top_k", 3))
    selected = {r.model_name for r in ranking[:top_k]}
    out = [r for r in runs if r.model_name in selected] if ranking else list(runs)
    for metric, limit in (("gflops", params.get("max_gflops")), ("latency_ms", params.get("max_latency_ms"))):
        if limit is not None:
            out = [r for r in out if getattr(r, metric) is None or getattr(r, metric) <= limit]
    return out


def job_report(s: Session, job_id: int) -> JobReport:
    """Everything about a job at once (`zooens run --json`, `zooens jobs show`)."""
    job = registry.get_job(s, job_id)
    runs = run_rows(s, job_id)
    ranking = ranking_rows(s, job_id)
    return JobReport(
        job=job_public(job),
        ranking=ranking,
        runs=runs,
        ensemble=ensemble_view(s, job_id),
        best_single=best_single(ensemble_candidates(runs, ranking, job.params)),
    )
