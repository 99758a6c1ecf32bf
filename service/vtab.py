"""The VTAB-1k batch runner: one registry job per task, results as CSV, markdown and a plot.

For each task, as Mustafa et al. 2020 and task_adaptation do: rank the zoo on train800 (kNN),
sweep the top-K on train800 with val200, build the greedy ensemble on val200; then (`refit`, the
default) train every reported model again on train800+val200 (1,000 examples) with the same
hyper-parameters and strategy options: the ensemble's members, the best single run (lowest val
CE) and the best run of the kNN-top-1 model, each distinct (model, strategy, hyper-parameters)
once, and test them on the whole test split. Without refit the numbers are those of the models
trained on train800 (800 examples), labelled so in the tables.

Jobs run with `preprocessing="resize"` (every image resized straight to the input size, no crop,
bilinear, the model's mean/std: the reference's preprocessing) and `small_classes="allow"`
(VTAB-1k's 800 examples leave classes with one or no example, e.g. SUN397's 397 classes).

A task that fails is recorded (`tasks/<task>.json`, status "failed" and a one-line reason; the
traceback at debug level) and the batch goes on; the tables hold what finished and say how many
tasks each mean covers. A rerun skips the tasks done (with the same refit mode) and retries the
failed ones; `force` redoes all.

Stand-ins (the offline suite, `offline-*`, or any task.json with `stand_in`) are never VTAB: their
group names are `offline-<group>`, they go to their own tables (`results-offline.*`) and never into
the VTAB group means or the 19-task mean. Only the 19 task names of `tasks.TASKS` can be VTAB rows.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zooens.ensemble import RunSpec, get_strategy, run_finetune
from zooens.ensemble.results import RunResult
from zooens.errors import ConfigError, JobError
from zooens.pipeline import JobParams, prepare_job_dataset
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, Split
from zooens.selection.vtab.reference import REFERENCE_CITATION, REFERENCE_MEAN, REFERENCE_NAME, reference_for
from zooens.selection.vtab.sources import load_exported_task
from zooens.selection.vtab.tasks import GROUPS, TASK_REGISTRY, TASKS, get_task, resolve_tasks
from zooens.service.db.session import session_scope
from zooens.service.jobs import require_success, run_here
from zooens.service.reports import best_single, job_report
from zooens.settings import get_settings
from zooens.utils import resolve_device

try:  # optional (zooens[bench]): the plot is skipped without it; the Figure API needs no global backend
    from matplotlib.figure import Figure
except ImportError:  # pragma: no cover - depends on the environment
    Figure = None

logger = logging.getLogger(__name__)

__all__ = [
    "DONE",
    "FAILED",
    "MISSING",
    "TaskResult",
    "plot_results",
    "refit_dataset",
    "refit_runs",
    "run_task",
    "run_vtab",
    "select_tasks",
    "spec_from_run",
    "task_kind",
    "vtab_params",
    "write_tables",
]

DONE, FAILED, MISSING = "done", "failed", "missing"
OFFLINE_PREFIX = "offline-"
RECORD_ONLY_HPARAMS = frozenset({"strategy_requested", "passes"})
"""Keys a job adds to a run's hparams that are notes, not options of the strategy (`passes`: the forward
passes a `concat` probe reads, with their costs)."""


@dataclass
class TaskResult:
    """One task's row. Accuracies are fractions of the test split; None where the task did not finish."""

    task: str
    group: str
    stand_in: bool
    status: str = DONE
    reason: str = ""
    job_id: int | None = None
    ensemble_test_acc: float | None = None
    best_single_test_acc: float | None = None
    knn_top1_test_acc: float | None = None
    ensemble_size: int | None = None
    updated_params: int | None = None
    best_single: str = ""
    knn_top1: str = ""
    refit: bool = True
    n_train: int | None = None
    preprocessing: str = ""
    seconds: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskResult:
        """A row written by this or an earlier version (unknown keys dropped, missing ones defaulted)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------------------
# Which tasks


def _task_json(data_root: Path, name: str) -> dict[str, Any]:
    path = data_root / name / "task.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # unreadable metadata: the task's own load reports it


def task_kind(data_root: str | Path, name: str) -> tuple[str, bool]:
    """(group, stand_in) of a task. Only the 19 VTAB names can be VTAB; anything else, or a folder whose
    task.json says `stand_in`, is a stand-in whose group is `offline-<group>`."""
    meta = _task_json(Path(data_root), name)
    if name in TASK_REGISTRY and not meta.get("stand_in", False):
        return get_task(name).group, False
    group = str(meta.get("group") or "other")
    return (group if group.startswith(OFFLINE_PREFIX) else OFFLINE_PREFIX + group), True


def _present(data_root: Path) -> list[str]:
    return sorted(p.name for p in data_root.iterdir() if p.is_dir() and (p / "train800").is_dir())


def select_tasks(data_root: str | Path, spec: str) -> list[str]:
    """Task names for `--tasks`.

    `all` or a group name: the VTAB tasks only (absent ones run as "missing" rows, never
    stand-ins); `offline`: every stand-in folder of `data_root`; else comma-separated names, each
    a VTAB task or a stand-in folder of `data_root`.
    """
    root = Path(data_root)
    spec = spec.strip()
    if spec == "all" or spec in GROUPS:
        return [t.name for t in resolve_tasks(spec)]
    if spec == "offline":
        names = [n for n in _present(root) if task_kind(root, n)[1]]
        if not names:
            raise ConfigError(
                f"No offline stand-in tasks in {root}; write them with `zooens vtab make-offline-suite {root}`."
            )
        return names
    names = list(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    if not names:
        raise ConfigError("Give --tasks as all, natural, specialized, structured, offline, or comma-separated names.")
    for name in names:
        if name in TASK_REGISTRY:
            continue
        if (root / name / "train800").is_dir() and task_kind(root, name)[1]:
            continue
        try:
            get_task(name)
        except ConfigError as exc:
            raise ConfigError(f"{exc} Stand-ins are offline-* folders of {root}; none is called {name!r}.") from None
    return names


# --------------------------------------------------------------------------------------
# Running


def vtab_params(params: JobParams | None = None, *, refit: bool = True) -> JobParams:
    """The job parameters of a VTAB task: `params` with preprocessing "resize" unless the caller chose one,
    and small_classes "allow" unless the caller chose one. Without `refit`, every strategy the job may use that has
    option `refit` (the probes, which refit inside a job by default) gets it false unless the caller set it, so
    every number is a train800 model's."""
    params = params or JobParams()
    update: dict[str, Any] = {}
    if "preprocessing" not in params.model_fields_set:
        update["preprocessing"] = "resize"
    if "small_classes" not in params.model_fields_set:
        update["small_classes"] = "allow"
    if not refit:
        options = {k: dict(v) for k, v in params.strategy_options.items()}
        for name in sorted(params.runnable_strategies):
            if "refit" in get_strategy(name).accepted_options and "refit" not in options.get(name, {}):
                options.setdefault(name, {})["refit"] = False
                options[name].pop("refit_folds", None)  # a refit's option, with no refit to apply to
        if options != params.strategy_options:
            update["strategy_options"] = options
    return JobParams.model_validate({**params.model_dump(), **update}) if update else params


def _concat(a: Split, b: Split, name: str) -> Split:
    if isinstance(a.images, np.ndarray) and isinstance(b.images, np.ndarray):
        if a.images.shape[1:] != b.images.shape[1:]:
            raise JobError(f"Cannot merge train and val for refit: image shapes {a.images.shape} and {b.images.shape}.")
        images: Any = np.concatenate([a.images, b.images])
    elif isinstance(a.images, list) and isinstance(b.images, list):
        images = a.images + b.images
    else:
        raise JobError("Cannot merge train and val for refit: one is stored as arrays, the other as files.")
    return Split(name, images, np.concatenate([a.labels, b.labels]))


def refit_dataset(ds: ImageDataset) -> ImageDataset:
    """train800+val200 as the training split; val kept only because a run needs one (its numbers, on
    training data, mean nothing); test unchanged."""
    return ImageDataset(
        ds.name + "+refit",
        ds.classes,
        {
            "train": _concat(ds.split("train"), ds.split("val"), "train"),
            "val": ds.split("val"),
            "test": ds.split("test"),
        },
        source=ds.source,
        extra=dict(ds.extra or {}),
    )


def spec_from_run(model_name: str, strategy: str, hparams: dict[str, Any]) -> RunSpec:
    """The RunSpec that trains a recorded run's configuration again: its hparams hold the spec's fields and, flat
    beside them, the strategy's options (`RunSpec.hparams`), which the strategy's `replay_options` turns into a
    configuration chosen already (linear: its C); notes a job adds (`strategy_requested`) are dropped."""
    fields = {f.name for f in dataclasses.fields(RunSpec)} - {"model_name", "strategy", "options"}
    known = {k: v for k, v in hparams.items() if k in fields}
    options = {k: v for k, v in hparams.items() if k not in fields and k not in RECORD_ONLY_HPARAMS}
    options = get_strategy(strategy).replay_options(options)  # e.g. linear: its chosen C alone
    return RunSpec(model_name=model_name, strategy=strategy, options=options, **known).validate()


def _run_key(run: dict[str, Any]) -> str:
    return json.dumps([run["model_name"], run["strategy"], run["hparams"]], sort_keys=True, default=str)


def refit_runs(runs: Iterable[dict[str, Any]], ds: ImageDataset) -> tuple[dict[str, RunResult], int]:
    """Train each distinct run (model, strategy, hparams) again on train+val of `ds`; test on its test split.

    Returns the results by run key and the number of training examples they saw (train+val).
    """
    merged = refit_dataset(ds)
    n_train = len(merged.split("train"))
    cache = EmbeddingCache(get_settings().resolved_cache_dir)
    device = resolve_device(get_settings().device)
    out: dict[str, RunResult] = {}
    for run in runs:
        key = _run_key(run)
        if key in out:
            continue
        spec = spec_from_run(run["model_name"], run["strategy"], run["hparams"])
        logger.info("refit %s/%s on %d examples", spec.model_name, spec.strategy, n_train)
        out[key] = run_finetune(spec, merged, cache=cache, device=device, progress=False)
    return out, n_train


def run_task(
    data_root: str | Path,
    task_name: str,
    *,
    zoo: str,
    params: JobParams,
    refit: bool,
    progress: bool,
    job_ids: list[int] | None = None,
) -> TaskResult:
    """One task end to end (raises on any failure; `run_vtab` records it). `job_ids` receives the job's id."""
    started = time.perf_counter()
    root = Path(data_root)
    group, stand_in = task_kind(root, task_name)
    ds = load_exported_task(root, task_name)
    if not stand_in:  # tasks exported before the table declared flips: the table decides
        ds.extra = {**get_task(task_name).declarations, **(ds.extra or {})}
    prepared = prepare_job_dataset(ds, params)
    job_id, status = run_here(
        str(Path(ds.source).resolve()),
        ds,
        zoo,
        params,
        name=ds.name,
        role=f"vtab-{task_name}",
        progress=progress,
        on_submitted=None if job_ids is None else job_ids.append,
    )
    require_success(status, job_id)
    with session_scope() as s:
        job = job_report(s, job_id)
    report = job.model_dump()
    ens, best = report["ensemble"], report["best_single"]
    if ens is None or best is None or not report["ranking"]:
        raise JobError(f"Job {job_id} finished without runs or an ensemble; see `zooens jobs show {job_id}`.")
    top1 = report["ranking"][0]["model_name"]
    top1_run = best_single([r for r in job.runs if r.model_name == top1])  # the same rule as the job's best single
    if top1_run is None:
        raise JobError(f"Job {job_id} has no fine-tuned run of its kNN-top-1 model {top1}.")
    top1_best = top1_run.model_dump()
    members = list({m["run_id"]: m for m in ens["members"]}.values())
    if refit:
        results, n_train = refit_runs([*members, best, top1_best], prepared)
        mix = sum(m["weight"] * results[_run_key(m)].test_proba for m in members)
        ens_acc = float((np.asarray(mix).argmax(1) == prepared.split("test").labels).mean())
        best_acc, top1_acc = results[_run_key(best)].test_acc, results[_run_key(top1_best)].test_acc
        updated = sum(results[_run_key(m)].updated_params for m in members)
    else:
        n_train = len(prepared.split("train"))
        ens_acc, best_acc, top1_acc = ens["test_acc"], best["test_acc"], top1_best["test_acc"]
        updated = sum(m["updated_params"] for m in members)
    return TaskResult(
        task=task_name,
        group=group,
        stand_in=stand_in,
        status=DONE,
        job_id=job_id,
        ensemble_test_acc=ens_acc,
        best_single_test_acc=best_acc,
        knn_top1_test_acc=top1_acc,
        ensemble_size=ens["size"],
        updated_params=int(updated),
        best_single=f"{best['model_name']} {best['strategy']}",
        knn_top1=top1,
        refit=refit,
        n_train=n_train,
        preprocessing=params.preprocessing,
        seconds=round(time.perf_counter() - started, 2),
    )


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    line = f"{type(exc).__name__}: {text}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _write_json(path: Path, result: TaskResult) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(result), indent=2))
    tmp.replace(path)


def run_vtab(
    data_root: str | Path,
    tasks: list[str],
    out_dir: str | Path,
    *,
    zoo: str = "embedded",
    params: JobParams | None = None,
    refit: bool = True,
    force: bool = False,
    progress: bool = True,
    on_task: Callable[[str, str], None] | None = None,
) -> list[TaskResult]:
    """Run every task not already done (its `tasks/<task>.json` with status done and the same refit mode);
    record failures and go on; write the tables (`write_tables`). KeyboardInterrupt stops the batch."""
    params = vtab_params(params, refit=refit)
    root, out = Path(data_root), Path(out_dir)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    results: list[TaskResult] = []
    for name in tasks:
        group, stand_in = task_kind(root, name)
        if not stand_in and not (root / name).is_dir():
            logger.info("%s: not in %s; export it with `zooens vtab export --tasks %s`", name, root, name)
            results.append(
                TaskResult(
                    task=name,
                    group=group,
                    stand_in=False,
                    status=MISSING,
                    refit=refit,
                    reason=f"not in {root}: `zooens vtab export --tasks {name}` writes it",
                )
            )
            if on_task:
                on_task(name, MISSING)
            continue
        done_file = out / "tasks" / f"{name}.json"
        if done_file.is_file() and not force:
            try:
                previous = TaskResult.from_json(json.loads(done_file.read_text()))
            except (OSError, ValueError, TypeError):
                previous = None
            if previous is not None and previous.status == DONE and previous.refit == refit:
                logger.info("%s: done already (%s), skipping; --force redoes it", name, done_file)
                results.append(previous)
                if on_task:
                    on_task(name, "skipped")
                continue
            if previous is not None:
                logger.info("%s: %s before (refit %s), running it again", name, previous.status, previous.refit)
        if on_task:
            on_task(name, "running")
        started, job_ids = time.perf_counter(), []
        try:
            result = run_task(root, name, zoo=zoo, params=params, refit=refit, progress=progress, job_ids=job_ids)
        except Exception as exc:  # noqa: BLE001 - any failure of one task is recorded; the batch goes on
            logger.debug("%s failed", name, exc_info=True)
            reason = _one_line(exc)
            logger.warning("%s failed: %s", name, reason)
            result = TaskResult(
                task=name,
                group=group,
                stand_in=stand_in,
                status=FAILED,
                reason=reason,
                job_id=job_ids[-1] if job_ids else None,
                refit=refit,
                preprocessing=params.preprocessing,
                seconds=round(time.perf_counter() - started, 2),
            )
        _write_json(done_file, result)
        results.append(result)
        if on_task:
            on_task(name, result.status)
    missing = [r.task for r in results if r.status == MISSING]
    if missing:
        logger.warning("%d VTAB task(s) have no data in %s and are listed as missing, not run", len(missing), root)
    write_tables(results, out)
    return results


# --------------------------------------------------------------------------------------
# Tables

METRICS = ("ensemble_test_acc", "best_single_test_acc", "knn_top1_test_acc")
CSV_FIELDS = [
    "task",
    "group",
    "stand_in",
    "status",
    "reason",
    "tasks",
    *METRICS,
    "reference",
    "ensemble_size",
    "updated_params",
    "best_single",
    "knn_top1",
    "refit",
    "n_train",
    "preprocessing",
    "seconds",
    "job_id",
]
PREPROCESSING_NOTES = {
    "resize": "every image resized straight to the model's input size, no crop, bilinear, the model's "
    "mean/std (VTAB's reference)",
    "model": "each model's own evaluation transform (resize and centre crop), not VTAB's reference",
}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def group_means(results: list[TaskResult], *, stand_in: bool) -> list[dict[str, Any]]:
    """One row per group, then the overall mean: the mean over the done tasks, with `done` and `total`
    (e.g. natural 6 of 7). The reference mean is given only where every task of the row has one, or,
    for the overall row of all 19 VTAB tasks, the reference's published 19-task mean."""
    if stand_in:
        groups = sorted({r.group for r in results})
    else:
        groups = [g for g in GROUPS if any(r.group == g for r in results)]
    rows = []
    for label, members in [(g, [r for r in results if r.group == g]) for g in groups] + [("mean", results)]:
        if not members:
            continue
        done = [r for r in members if r.status == DONE]
        row: dict[str, Any] = {"group": label, "done": len(done), "total": len(members)}
        for m in METRICS:
            row[m] = _mean([getattr(r, m) for r in done if getattr(r, m) is not None])
        refs = [None if stand_in else reference_for(r.task) for r in members]
        row["reference"] = float(np.mean(refs)) if refs and all(v is not None for v in refs) else None
        if (
            row["reference"] is None
            and label == "mean"
            and not stand_in
            and {r.task for r in done} == {t.name for t in TASKS}
        ):
            row["reference"] = REFERENCE_MEAN
        rows.append(row)
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{suffix}" if n < 10 * size else f"{n / size:.0f}{suffix}"
    return str(n)


def _duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f}s"
    if seconds < 6000:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
            )
            + " |"
        )

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return [line(header), sep, *(line(r) for r in rows)]


def _wrap(text: str, prefix: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        width=80,
        initial_indent=prefix,
        subsequent_indent=" " * len(prefix),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [prefix.rstrip()]


def _refit_note(results: list[TaskResult]) -> str:
    modes = {r.refit for r in results if r.status == DONE}
    if modes == {True}:
        return (
            "Refit: on. Models were selected on train800/val200 (kNN ranking, sweep, greedy ensemble); every "
            "reported model (the ensemble's members, the best single run, the kNN top-1's best run) was then "
            "trained again on train800+val200 (1,000 examples) with the same hyper-parameters and strategy "
            "options, and tested on the full test split, as the papers do."
        )
    if modes == {False}:
        return (
            "Refit: off (--no-refit). The numbers are those of models trained on train800 only (800 "
            "examples); the papers train the reported models on train800+val200 (1,000)."
        )
    if not modes:
        return "Refit: no task finished."
    return "Refit: mixed across tasks; see the refit column of the CSV."


def _markdown(results: list[TaskResult], means: list[dict[str, Any]], *, stand_in: bool) -> str:
    lines = ["# Offline stand-in results (generated data, NOT VTAB)" if stand_in else "# VTAB-1k results", ""]
    if stand_in:
        lines += _wrap(
            "Stand-ins (offline-*) are generated data, not VTAB: never compare these numbers with "
            "VTAB's, and never average them with VTAB tasks."
        ) + [""]
    preprocessing = sorted({r.preprocessing for r in results if r.status == DONE and r.preprocessing})
    text = "; ".join(f"{p}: {PREPROCESSING_NOTES.get(p, p)}" for p in preprocessing) or "no task finished"
    lines += _wrap(f"Preprocessing: {text}.") + [""] + _wrap(_refit_note(results)) + [""]
    if not stand_in:
        mean = (
            ""
            if REFERENCE_MEAN is None
            else f" Its 19-task mean ({REFERENCE_MEAN:.1f}) shows only when all 19 tasks are done."
        )
        lines += _wrap(
            f"Reference (ref): {REFERENCE_NAME} ({REFERENCE_CITATION}); per-task numbers only where a "
            f"source could be read (selection/vtab/reference.py), else '-'.{mean}"
        ) + [""]
    lines += _wrap(
        "Columns: test accuracy (%) of the greedy ensemble (ens), the best single run by val "
        "cross-entropy (best) and the kNN-top-1 model's best run (kNN1); n: ensemble size; "
        "params: parameters updated, summed over the ensemble's members; time: wall time."
    ) + [""]
    rows = []
    for r in results:
        first = _pct(r.ensemble_test_acc) if r.status == DONE else r.status
        ref = None if r.stand_in else reference_for(r.task)
        rows.append(
            [
                r.task,
                first,
                _pct(r.best_single_test_acc),
                _pct(r.knn_top1_test_acc),
                "-" if ref is None else f"{ref:.1f}",
                "-" if r.ensemble_size is None else str(r.ensemble_size),
                _count(r.updated_params),
                _duration(r.seconds) if r.status != MISSING else "-",
            ]
        )
    lines += _table(["task", "ens", "best", "kNN1", "ref", "n", "params", "time"], rows, right={1, 2, 3, 4, 5, 6, 7})
    lines += [""]
    mean_rows = [
        [
            f"{'all' if m['group'] == 'mean' else m['group']} ({m['done']}/{m['total']})",
            _pct(m["ensemble_test_acc"]),
            _pct(m["best_single_test_acc"]),
            _pct(m["knn_top1_test_acc"]),
            "-" if m["reference"] is None else f"{m['reference']:.1f}",
        ]
        for m in means
    ]
    lines += _table(["mean over done tasks (done/all)", "ens", "best", "kNN1", "ref"], mean_rows, right={1, 2, 3, 4})
    n_vtab = len(TASKS)
    n_done = len({r.task for r in results if r.status == DONE})
    if not stand_in and n_done < n_vtab:
        lines += [""] + _wrap(
            f"The mean covers {n_done} of the {n_vtab} VTAB-1k tasks: it is not the "
            f"VTAB-1k score, which is the mean over all {n_vtab}."
        )
    failed = [r for r in results if r.status == FAILED]
    missing = [r for r in results if r.status == MISSING]
    if failed:
        lines += ["", "Failed (a rerun retries them; the traceback is in the debug log):"]
        for r in failed:
            lines += _wrap(r.reason, prefix=f"- {r.task}: ")
    if missing:
        lines += [""] + _wrap(
            "Missing (no data; not run, not in the means): "
            + ", ".join(r.task for r in missing)
            + ". Export them with `zooens vtab export --tasks NAMES --out DATA_ROOT`."
        )
    return "\n".join(lines) + "\n"


def _csv(path: Path, results: list[TaskResult], means: list[dict[str, Any]], *, stand_in: bool) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in results:
            row = asdict(r)
            row["reference"] = None if r.stand_in else reference_for(r.task)
            w.writerow(row)
        for m in means:
            w.writerow(
                {
                    "task": f"mean:{m['group']}",
                    "group": m["group"],
                    "stand_in": stand_in,
                    "status": "mean",
                    "tasks": f"{m['done']}/{m['total']}",
                    "reference": m["reference"],
                    **{k: None if m[k] is None else round(m[k], 4) for k in METRICS},
                }
            )


def plot_results(results: list[TaskResult], path: Path, *, title: str) -> Path | None:
    """Per-task bars of ensemble / best single / kNN top-1 (and the reference where known), as `path`.
    None, with a logged notice, when matplotlib is not installed."""
    if Figure is None:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    series = [
        ("ensemble", "ensemble_test_acc"),
        ("best single", "best_single_test_acc"),
        ("kNN top-1", "knn_top1_test_acc"),
    ]
    refs = [None if r.stand_in else reference_for(r.task) for r in results]
    with_ref = any(v is not None for v in refs)
    n_bars = len(series) + int(with_ref)
    width = 0.8 / n_bars
    x = np.arange(len(results))
    fig = Figure(figsize=(max(6.0, 0.7 * len(results) + 2), 4.5))
    ax = fig.subplots()
    for i, (label, attr) in enumerate(series):
        values = [100 * getattr(r, attr) if getattr(r, attr) is not None else 0.0 for r in results]
        ax.bar(x + (i - (n_bars - 1) / 2) * width, values, width, label=label)
    if with_ref:
        ax.bar(x + (n_bars - 1) / 2 * width, [v or 0.0 for v in refs], width, label=REFERENCE_NAME, color="grey")
    ax.set_xticks(x)
    ax.set_xticklabels(
        [r.task if r.status == DONE else f"{r.task}\n({r.status})" for r in results],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_tables(results: list[TaskResult], out: str | Path) -> list[Path]:
    """The VTAB rows to results.{csv,md,png}, the stand-ins' to results-offline.{csv,md,png}; each only when
    it has rows. Returns the paths written."""
    out = Path(out)
    written: list[Path] = []
    for stand_in, stem in ((False, "results"), (True, "results-offline")):
        rows = [r for r in results if r.stand_in == stand_in]
        if not rows:
            continue
        means = group_means(rows, stand_in=stand_in)
        csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
        _csv(csv_path, rows, means, stand_in=stand_in)
        md_path.write_text(_markdown(rows, means, stand_in=stand_in))
        written += [csv_path, md_path]
        png = plot_results(rows, out / f"{stem}.png", title="Offline stand-ins (not VTAB)" if stand_in else "VTAB-1k")
        if png is not None:
            written.append(png)
    return written
