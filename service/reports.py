"""Read-side views of a job (ranking, runs, ensemble), shared by the CLI, API and dashboard."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from zooens.service import registry


def ranking_rows(s: Session, job_id: int) -> list[dict[str, Any]]:
    """One row per model, best kNN first, with the best fine-tuned run of that model when known."""
    scores = registry.get_ranking(s, job_id)
    runs = registry.list_finetune_runs(s, job_id)
    best_run: dict[str, Any] = {}
    for run in runs:
        cur = best_run.get(run.model_name)
        if cur is None or run.val_ce < cur.val_ce:
            best_run[run.model_name] = run
    rows = []
    for rank, sc in enumerate(scores, start=1):
        run = best_run.get(sc.model_name)
        rows.append(
            {
                "rank": rank,
                "model": sc.model_name,
                "knn_accuracy": sc.knn_accuracy,
                "val_accuracy": sc.val_accuracy,
                "logme": sc.logme,
                "finetuned_val_acc": None if run is None else run.val_acc,
                "finetuned_val_ce": None if run is None else run.val_ce,
                "finetuned_test_acc": None if run is None else run.test_acc,
                "best_strategy": None if run is None else run.strategy,
                "updated_params": None if run is None else run.updated_params,
                "update_bytes": None if run is None else run.update_bytes,
                "params": sc.params,
                "embed_dim": sc.embed_dim,
                "embed_seconds": sc.embed_seconds,
                "images_per_s": sc.images_per_s,
            }
        )
    return rows


def run_rows(s: Session, job_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "model": r.model_name,
            "strategy": r.strategy,
            "hparams": r.hparams,
            "val_ce": r.val_ce,
            "val_acc": r.val_acc,
            "test_acc": r.test_acc,
            "seconds": r.seconds,
            "updated_params": r.updated_params,
            "update_bytes": r.update_bytes,
        }
        for r in registry.list_finetune_runs(s, job_id)
    ]


def ensemble_view(s: Session, job_id: int) -> dict[str, Any] | None:
    ens = registry.get_job_ensemble(s, job_id)
    if ens is None:
        return None
    runs = {r.id: r for r in registry.list_finetune_runs(s, job_id)}
    members = []
    for m in sorted(ens.members, key=lambda m: m.position):
        run = runs[m.run_id]
        members.append(
            {
                "run_id": run.id,
                "model": run.model_name,
                "strategy": run.strategy,
                "hparams": run.hparams,
                "weight": m.weight,
                "val_ce": run.val_ce,
                "val_acc": run.val_acc,
                "test_acc": run.test_acc,
                "updated_params": run.updated_params,
                "update_bytes": run.update_bytes,
            }
        )
    return {
        "id": ens.id,
        "job_id": job_id,
        "size": ens.size,
        "val_ce": ens.val_ce,
        "val_acc": ens.val_acc,
        "test_acc": ens.test_acc,
        "loss_curve": ens.loss_curve,
        "members": members,
    }


def job_report(s: Session, job_id: int) -> dict[str, Any]:
    job = registry.get_job(s, job_id)
    return {
        "job": {
            "id": job.id,
            "status": job.status,
            "stage": job.stage,
            "progress": job.progress,
            "error": job.error,
            "dataset_id": job.dataset_id,
            "zoo": job.zoo_spec,
        },
        "ranking": ranking_rows(s, job_id),
        "runs": run_rows(s, job_id),
        "ensemble": ensemble_view(s, job_id),
    }
