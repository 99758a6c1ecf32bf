"""The VTAB-1k batch runner: one registry job per task, results as CSV and markdown.

For each task: rank the zoo on train800 (kNN), sweep the top-K on train800 with val200, build
the greedy ensemble on val200 and evaluate on test; with `refit`, the chosen members are
trained again on train800+val200 (same hyper-parameters) before testing. A task whose result
file exists in the output folder is skipped unless `force`, so an interrupted run resumes.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from zooens.ensemble import RunSpec, run_finetune
from zooens.ensemble.specs import resolve_augmentation
from zooens.errors import JobError
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, Split
from zooens.selection.vtab.sources import load_exported_task
from zooens.selection.vtab.tasks import TASK_REGISTRY, get_task
from zooens.service.db.session import session_scope, upgrade_to_head
from zooens.service.jobs import (
    JobParams,
    default_worker_id,
    prepare_job_dataset,
    register_dataset,
    require_success,
    run_job,
    submit_job,
)
from zooens.service.reports import job_report
from zooens.settings import get_settings
from zooens.utils import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["TaskResult", "run_vtab", "write_tables"]


@dataclass
class TaskResult:
    task: str
    group: str
    stand_in: bool
    job_id: int
    ensemble_test_acc: float
    best_single_test_acc: float
    best_single: str
    knn_top1_test_acc: float
    knn_top1: str
    ensemble_size: int
    refit: bool
    seconds: float


def _task_group(ds, task_name: str) -> tuple[str, bool]:
    extra = ds.extra or {}
    if "group" in extra:
        return extra["group"], bool(extra.get("stand_in", False))
    return get_task(task_name).group, False


def _concat(a, b, name: str):
    if isinstance(a.images, np.ndarray) and isinstance(b.images, np.ndarray):
        if a.images.shape[1:] != b.images.shape[1:]:
            raise JobError(f"Cannot merge train and val for refit: image shapes {a.images.shape} and {b.images.shape}.")
        images = np.concatenate([a.images, b.images])
    elif isinstance(a.images, list) and isinstance(b.images, list):
        images = a.images + b.images
    else:
        raise JobError("Cannot merge train and val for refit: one is stored as arrays, the other as files.")
    return Split(name, images, np.concatenate([a.labels, b.labels]))


def refit_ensemble_test_acc(report: dict[str, Any], ds, params) -> float:
    """Retrain each ensemble member on train+val with its hyper-parameters; test the weighted mix."""

    merged = ImageDataset(
        ds.name + "+refit",
        ds.classes,
        {"train": _concat(ds.split("train"), ds.split("val"), "train"), "val": ds.split("val"), "test": ds.split("test")},
        source=ds.source, extra=dict(ds.extra),
    )
    cache = EmbeddingCache(get_settings().resolved_cache_dir)
    mix = None
    for m in report["ensemble"]["members"]:
        hp = m["hparams"]
        augmentation = hp.get("augmentation") or resolve_augmentation(params.augmentation, m["strategy"], ds.extra)
        spec = RunSpec(model_name=m["model_name"], strategy=m["strategy"], lr=hp["lr"], steps=hp["steps"], seed=params.seed,
                       resolution=hp.get("resolution", params.resolution), batch_size=hp.get("batch_size", 64),
                       augmentation=augmentation)
        res = run_finetune(spec, merged, cache=cache, device=resolve_device(get_settings().device), progress=False)
        mix = m["weight"] * res.test_proba if mix is None else mix + m["weight"] * res.test_proba
    return float((mix.argmax(1) == ds.split("test").labels).mean())


def run_task(data_root: Path, task_name: str, *, zoo: str, params, refit: bool, progress: bool) -> TaskResult:
    started = time.perf_counter()
    ds = load_exported_task(data_root, task_name)
    if task_name in TASK_REGISTRY:  # tasks exported before the table declared flips: the table decides
        ds.extra = {**get_task(task_name).declarations, **ds.extra}
    group, stand_in = _task_group(ds, task_name)
    prepared = prepare_job_dataset(ds, params)
    upgrade_to_head()
    with session_scope() as s:
        row = register_dataset(s, str(Path(ds.source).resolve()), ds, name=ds.name)
        worker_id = default_worker_id(f"vtab-{task_name}")
        job_id = submit_job(s, row.id, zoo, params, claim_for=worker_id).id
    status = run_job(job_id, worker_id=worker_id, progress=progress)
    require_success(status, job_id)
    with session_scope() as s:
        report = job_report(s, job_id).model_dump()
    runs = report["runs"]
    best = min(runs, key=lambda r: (r["val_ce"], r["id"]))
    top1 = report["ranking"][0]["model_name"]
    top1_best = min((r for r in runs if r["model_name"] == top1), key=lambda r: (r["val_ce"], r["id"]))
    ens = report["ensemble"]
    ens_acc = refit_ensemble_test_acc(report, prepared, params) if refit else ens["test_acc"]
    return TaskResult(
        task=task_name, group=group, stand_in=stand_in, job_id=job_id, ensemble_test_acc=ens_acc,
        best_single_test_acc=best["test_acc"], best_single=f"{best['model_name']} {best['strategy']}",
        knn_top1_test_acc=top1_best["test_acc"], knn_top1=top1, ensemble_size=ens["size"], refit=refit,
        seconds=round(time.perf_counter() - started, 2),
    )


def run_vtab(
    data_root: str | Path,
    tasks: list[str],
    out_dir: str | Path,
    *,
    zoo: str = "embedded",
    params=None,
    refit: bool = False,
    force: bool = False,
    progress: bool = True,
    on_task: Callable[[str, str], None] | None = None,
) -> list[TaskResult]:
    """Run every task not already done (its `<task>.json` in `out_dir`); write the tables."""

    params = params or JobParams()
    out = Path(out_dir)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    results = []
    for name in tasks:
        done_file = out / "tasks" / f"{name}.json"
        if done_file.is_file() and not force:
            logger.info("%s: done already (%s), skipping; --force redoes it", name, done_file)
            results.append(TaskResult(**json.loads(done_file.read_text())))
            if on_task:
                on_task(name, "skipped")
            continue
        if on_task:
            on_task(name, "running")
        result = run_task(Path(data_root), name, zoo=zoo, params=params, refit=refit, progress=progress)
        tmp = done_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result), indent=2))
        tmp.replace(done_file)
        results.append(result)
        if on_task:
            on_task(name, "done")
    write_tables(results, out)
    return results


METRICS = ("ensemble_test_acc", "best_single_test_acc", "knn_top1_test_acc")


def group_means(results: list[TaskResult]) -> list[dict[str, Any]]:
    rows = []
    groups = [g for g in ("natural", "specialized", "structured") if any(r.group == g for r in results)]
    for label, members in [(g, [r for r in results if r.group == g]) for g in groups] + [("mean", results)]:
        if members:
            rows.append({"group": label, "tasks": len(members),
                         **{m: float(np.mean([getattr(r, m) for r in members])) for m in METRICS}})
    return rows


def write_tables(results: list[TaskResult], out: Path) -> tuple[Path, Path]:
    """results.csv (one row per task, then group means) and results.md."""
    csv_path, md_path = out / "results.csv", out / "results.md"
    fields = list(TaskResult.__dataclass_fields__)
    means = group_means(results)
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in results:
            w.writerow(asdict(r))
        for m in means:
            w.writerow({"task": f"mean:{m['group']}", "group": m["group"], **{k: round(m[k], 4) for k in METRICS}})
    stand_in = any(r.stand_in for r in results)
    lines = []
    if stand_in:
        lines.append("> Offline stand-in tasks (`offline-*`): generated data, not VTAB; do not compare with VTAB numbers.\n")
    lines.append("| task | group | ensemble | best single | kNN top-1 | ensemble size | seconds |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        lines.append(f"| {r.task} | {r.group} | {100 * r.ensemble_test_acc:.1f} | {100 * r.best_single_test_acc:.1f} | "
                     f"{100 * r.knn_top1_test_acc:.1f} | {r.ensemble_size} | {r.seconds:.0f} |")
    for m in means:
        lines.append(f"| **{m['group']}** ({m['tasks']}) | | {100 * m['ensemble_test_acc']:.1f} | "
                     f"{100 * m['best_single_test_acc']:.1f} | {100 * m['knn_top1_test_acc']:.1f} | | |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path
