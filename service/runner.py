"""Drive one job through its stages, writing each finished unit to the registry.

Used by `zooens run` (in the foreground) and by `zooens worker` (for claimed jobs). A
job's state lives in the database: running it again skips every finished unit.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from zooens.service import registry
from zooens.service.db.session import session_scope
from zooens.service.pipeline import (
    EMBED,
    ENSEMBLE,
    FINETUNE,
    JobParams,
    JobSpec,
    build_ensemble,
    get_executor,
    job_dataset,
    plan_finetune_units,
)
from zooens.errors import JobError, ZooensError
from zooens.settings import get_settings

logger = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised between units when a cancel was requested."""


def job_spec(job_id: int) -> JobSpec:
    settings = get_settings()
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        dataset = registry.get_dataset(s, job.dataset_id)
        return JobSpec(
            job_id=job.id,
            dataset_source=dataset.source,
            zoo=list(job.params.get("_zoo_models") or []),
            params={k: v for k, v in job.params.items() if not k.startswith("_")},
            home=str(settings.home.resolve()),
            cache_dir=str(settings.resolved_cache_dir.resolve()),
        )


def rank_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Embed-unit results ordered best first: kNN accuracy, then val accuracy, then name."""
    rows = list(results.values())
    return sorted(rows, key=lambda r: (-r["knn_accuracy"], -r["val_accuracy"], r["model"]))


class _Heartbeat(threading.Thread):
    def __init__(self, job_id: int, worker_id: str, every: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id, self.worker_id, self.every = job_id, worker_id, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with session_scope() as s:
                    registry.heartbeat(s, self.job_id, self.worker_id)
            except Exception:  # a missed beat is not fatal; the next one may succeed
                logger.warning("heartbeat for job %s failed", self.job_id, exc_info=True)


def run_job(job_id: int, *, worker_id: str = "cli", executor=None, progress: bool = True) -> str:
    """Run (or resume) a job to its end; returns the final status."""
    settings = get_settings()
    executor = executor or get_executor()
    beat = _Heartbeat(job_id, worker_id, settings.heartbeat_seconds)
    with session_scope() as s:
        registry.set_job_status(s, job_id, "running", worker_id=worker_id)
    beat.start()
    try:
        _run_stages(job_id, worker_id, executor, progress)
    except JobCancelled:
        status, error = "cancelled", None
    except ZooensError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # recorded on the job, never swallowed silently
        logger.exception("job %s failed", job_id)
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    else:
        status, error = "succeeded", None
    finally:
        beat.stopped.set()
    with session_scope() as s:
        registry.set_job_status(s, job_id, status, error=error)
    return status


def _check_cancel(job_id: int) -> None:
    with session_scope() as s:
        if registry.get_job(s, job_id).cancel_requested:
            raise JobCancelled


def _progress(job_id: int, stage: str, done: int, total: int, current: str | None = None) -> None:
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        progress = dict(job.progress or {})
        progress[stage] = {"done": done, "total": total, "current": current}
        registry.set_job_progress(s, job_id, stage=stage, progress=progress)


def _run_stages(job_id: int, worker_id: str, executor, progress: bool) -> None:
    spec = job_spec(job_id)
    params = JobParams.from_dict(spec.params)
    ds = job_dataset(spec)  # dataset errors fail the job before any unit runs

    # Stage 1: embed and score every model of the zoo.
    embed_keys = [f"{EMBED}:{m}" for m in spec.zoo]
    _run_units(job_id, spec, EMBED, embed_keys, executor, progress, _record_embed)
    with session_scope() as s:
        embed_results = {k: v for k, v in registry.done_units(s, job_id).items() if k.startswith(EMBED + ":")}
    ranking = rank_rows(embed_results)

    # Stage 2: the fine-tuning sweep over the top-K models.
    ft_keys = plan_finetune_units(ranking, params)
    if "aft" in params.strategies and not params.strategy_options.get("aft", {}).get("teachers"):
        # adaptive feature transfer distils the selected (top-K) models' features
        options = dict(params.strategy_options)
        options["aft"] = {**options.get("aft", {}), "teachers": [r["model"] for r in ranking[: params.top_k]]}
        spec = dataclasses.replace(spec, params={**spec.params, "strategy_options": options})
    _run_units(job_id, spec, FINETUNE, ft_keys, executor, progress, _record_finetune)

    # Stage 3: the greedy ensemble (cheap: runs here).
    _check_cancel(job_id)
    with session_scope() as s:
        if ENSEMBLE in registry.done_units(s, job_id):
            return
        registry.ensure_units(s, job_id, [(ENSEMBLE, ENSEMBLE)])
    _progress(job_id, ENSEMBLE, 0, 1, "greedy selection")
    with session_scope() as s:
        runs = registry.list_finetune_runs(s, job_id)
        run_dicts = [{"id": r.id, "probs_path": r.probs_path} for r in runs]
    result = build_ensemble(run_dicts, ds, params)
    with session_scope() as s:
        ensemble = registry.create_ensemble(
            s,
            job_id,
            members=[(run_dicts[m["run_index"]]["id"], m["weight"]) for m in result["members"]],
            val_ce=result["val_ce"],
            val_acc=result["val_acc"],
            test_acc=result["test_acc"],
            size=result["size"],
            loss_curve=result["loss_curve"],
        )
        result["ensemble_id"] = ensemble.id
        unit = registry.get_unit(s, job_id, ENSEMBLE)
        registry.finish_unit(s, unit.id, result)
    _progress(job_id, ENSEMBLE, 1, 1)


def _run_units(job_id, spec, stage, keys, executor, progress, record) -> None:
    with session_scope() as s:
        registry.ensure_units(s, job_id, [(k, stage) for k in keys])
        done = set(registry.done_units(s, job_id))
    todo = [k for k in keys if k not in done]
    n_done = len(keys) - len(todo)
    if not todo:
        _progress(job_id, stage, n_done, len(keys))
        return
    if n_done:
        logger.info("job %s: %d of %d %s units already done, skipping them", job_id, n_done, len(keys), stage)
    _check_cancel(job_id)
    _progress(job_id, stage, n_done, len(keys), todo[0])
    remaining = list(todo)

    def on_done(key: str, result: dict[str, Any]) -> None:
        with session_scope() as s:
            record(s, job_id, key, result)
            unit = registry.get_unit(s, job_id, key)
            registry.finish_unit(s, unit.id, result)
        remaining.remove(key)
        _progress(job_id, stage, len(keys) - len(remaining), len(keys), remaining[0] if remaining else None)
        _check_cancel(job_id)

    executor.map(spec, todo, on_done, progress=progress)


def _record_embed(s, job_id: int, key: str, result: dict[str, Any]) -> None:
    for emb in result.get("embeddings", []):
        registry.record_embedding(
            s,
            cache_key=emb["key"],
            model_name=result["model"],
            dataset_fingerprint=result["dataset_fingerprint"],
            split=emb["split"],
            path=emb["path"],
            n=emb["n"],
            dim=emb["dim"],
        )
    registry.add_knn_score(
        s,
        job_id,
        model_name=result["model"],
        k=result.get("k"),
        knn_accuracy=result["knn_accuracy"],
        val_accuracy=result["val_accuracy"],
        logme=result.get("logme"),
        embed_seconds=result["embed_seconds"],
        images_per_s=result["images_per_s"],
        params=result["params"],
        embed_dim=result["embed_dim"],
    )


def _record_finetune(s, job_id: int, key: str, result: dict[str, Any]) -> None:
    registry.add_finetune_run(s, job_id, unit_key=key, **result)


def require_success(status: str, job_id: int) -> None:
    if status != "succeeded":
        with session_scope() as s:
            job = registry.get_job(s, job_id)
            raise JobError(f"Job {job_id} {status}: {job.error or 'no reason recorded'}")
