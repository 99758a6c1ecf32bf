"""The read side, built once for the CLI, the API and the dashboard.

A job's views are typed records (the API answers with these very models): `JobPublic`, `RankingRow`
(one per model, best kNN first, with its best fine-tuned run), `RunPublic`, `EnsemblePublic`, and
`JobReport`, all four at once. The run, ensemble and ranking views derive from the pipeline's records
(`zooens.pipeline.records`: `RunFacts`, `EnsembleFacts`, `ScoreRecord`), read from the ORM rows by
attribute (`from_attributes`), never copied key by key. Below them, the other reads the dashboard and
the API share: the zoo catalogue, the ranking audits, a dataset's facts and sample thumbnails. The
dashboard reads only through this module.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import torch
from huggingface_hub import constants as hf_constants
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from sqlalchemy.orm import Session

from zooens.errors import NotFoundError
from zooens.pipeline.records import EnsembleFacts, RankingRow, RunFacts, ScoreRecord, ranking_table
from zooens.service import registry
from zooens.service.db.models import FINISHED, Ensemble, Job
from zooens.service.db.session import session_scope
from zooens.service.thumbnails import ensure_thumbnails, sample_indices, thumbnail_file, thumbnails_dir
from zooens.settings import get_settings
from zooens.zoo import hub_cache_dir, list_weight_sets, model_facts

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
    # reads for the dashboard and the API
    "CATALOGUE_MAX_AGE_SECONDS",
    "DatasetFacts",
    "JobAudit",
    "WeightSetPublic",
    "catalogue",
    "catalogue_facts",
    "dataset_facts",
    "dataset_samples",
    "public_facts",
    "ranking_audits",
    "refresh_catalogue",
    "split_names",
    "thumbnail_path",
    "warm_catalogue",
    "weight_set_public",
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
    n_train_used: int | None = Field(
        default=None,
        description="Training images the job really uses (params' n_train is the size asked for: a smaller dataset, "
        "or one with its own val split, gives another); None until its split is drawn (its first model embedded).",
    )
    n_val_used: int | None = Field(
        default=None, description="Validation images the job really uses; None until its split is drawn."
    )
    error: str | None
    worker_id: str | None
    cancel_requested: bool
    ranking_audit: dict[str, Any] | None = Field(
        default=None,
        description="How well the kNN ranking and LogME predicted the fine-tuned order: per predictor, Spearman and "
        "Kendall correlations with the models' best fine-tuned val accuracy, and the regret of its top-K.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Why the job's val numbers may not be trusted: a val split under 50 images, an ensemble val "
        "cross-entropy under 1e-3 (a leak or a trivially easy split). Recorded with the ensemble.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @field_validator("progress", mode="before")
    @classmethod
    def _no_progress_yet(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return value or {}

    @field_validator("warnings", mode="before")
    @classmethod
    def _no_warnings(cls, value: list[str] | None) -> list[str]:
        return list(value or [])

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_seconds(self) -> float | None:
        """Wall time from the first unit's start to the end (None before it starts, and for a job still
        running: the dashboard and CLI show its elapsed time from `started_at`)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round(max(0.0, (self.finished_at - self.started_at).total_seconds()), 3)


class RunPublic(RunFacts):
    """A fine-tune run as the API shows it: its record's public part (`pipeline.records.RunFacts`) and its id."""

    id: int


class EnsembleMemberPublic(RunFacts):
    """A member of an ensemble: its run's public record, the run's id and the member's weight."""

    run_id: int
    weight: float


class EnsemblePublic(EnsembleFacts):
    """A job's ensemble as the API shows it: its record's public part (`pipeline.records.EnsembleFacts`)."""

    id: int
    job_id: int
    members: list[EnsembleMemberPublic]


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


def ranking_rows(s: Session, job_id: int) -> list[RankingRow]:
    """One row per model, best kNN first, with the best fine-tuned run of that model when known."""
    scores = [ScoreRecord.model_validate(row) for row in registry.get_ranking(s, job_id)]
    return ranking_table(scores, [RunFacts.model_validate(r) for r in registry.list_finetune_runs(s, job_id)])


def run_rows(s: Session, job_id: int) -> list[RunPublic]:
    return [RunPublic.model_validate(r) for r in registry.list_finetune_runs(s, job_id)]


def ensemble_view(s: Session, job_id: int) -> EnsemblePublic | None:
    """A job's latest ensemble, or None before it is built."""
    ens = registry.get_job_ensemble(s, job_id)
    return None if ens is None else ensemble_public(s, ens)


def ensemble_public(s: Session, ens: Ensemble) -> EnsemblePublic:
    """One stored ensemble as the API shows it (`GET /ensembles/{id}`; a job's latest one is `ensemble_view`)."""
    job_id = ens.job_id
    runs = {r.id: r for r in registry.list_finetune_runs(s, job_id)}
    members = [
        EnsembleMemberPublic(run_id=m.run_id, weight=m.weight, **RunFacts.model_validate(runs[m.run_id]).model_dump())
        for m in sorted(ens.members, key=lambda m: m.position)
    ]
    return EnsemblePublic(id=ens.id, job_id=job_id, members=members, **EnsembleFacts.model_validate(ens).model_dump())


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


# --- reads for the dashboard and the API ---
# The zoo catalogue (the API's /zoo and the dashboard's Zoo page share one cache), the ranking audits of finished
# jobs, and a dataset's facts and thumbnails. Each read opens its own session.

logger = logging.getLogger(__name__)


class WeightSetPublic(BaseModel):
    name: str
    arch: str
    tag: str | None = None
    origin: str
    weights_present: bool
    input_size: list[int] | None = None
    embed_dim: int | None = None
    num_params: int | None = Field(
        default=None, description="Parameters of its embedder (no classifier head); None when not known."
    )
    license: str | None = None
    upstream: str | None = Field(
        default=None,
        description="Category of its pre-training: in1k, in21k, semi-weak, self-supervised, image-text, distilled "
        "or other.",
    )
    upstream_data: str | None = None
    gflops: float | None = Field(
        default=None,
        description="GFLOPs of one batch-1 forward pass at its default resolution (a multiply-add is 2 FLOPs); "
        "None when not known.",
    )
    imagenet_top1: float | None = Field(
        default=None, description="ImageNet-1k validation top-1 (%) as timm publishes it; None when timm lists none."
    )
    facts: dict[str, Any] = Field(default_factory=dict, description="Every recorded fact of the weight set.")


def public_facts(facts: dict) -> dict:
    """A weight set's facts without server paths: a local weight file is named, not located."""
    source = dict(facts.get("source") or {})
    if source.get("kind") == "file" and source.get("path"):
        source["path"] = PurePath(source["path"]).name
    return {**facts, "source": source} if "source" in facts else facts


def catalogue_facts(ws) -> dict[str, Any]:
    """The catalogue facts of a weight set that users choose by (`upstream`, `num_params`, `gflops`,
    `imagenet_top1`), without building a model per row: a timm tag's size and FLOPs come from the table
    zooens ships (missing there: None, never counted here for ~1,800 rows); the few embedded and user sets
    are counted once per process on the meta device. Any failure: no facts."""
    try:
        facts = model_facts(ws, count=ws.origin != "catalogue")
    except Exception:  # noqa: BLE001  a fact we cannot read is unknown, never an error of the catalogue
        logger.debug("no catalogue facts for %s", getattr(ws, "name", ws), exc_info=True)
        return {}
    return {k: getattr(facts, k) for k in ("upstream", "num_params", "gflops", "imagenet_top1")}


def weight_set_public(ws) -> WeightSetPublic:
    facts = public_facts(ws.to_dict())  # computes weights_present (file-system look-ups) once
    size = getattr(ws.input, "input_size", None)
    extra = catalogue_facts(ws)
    num_params = ws.num_params if ws.num_params is not None else extra.get("num_params")
    gflops = extra.get("gflops")
    return WeightSetPublic(
        name=ws.name,
        arch=ws.arch,
        tag=ws.tag,
        origin=ws.origin,
        weights_present=bool(facts["weights_present"]),
        input_size=list(size) if size else None,
        embed_dim=ws.embed_dim,
        num_params=num_params,
        license=ws.license,
        upstream=extra.get("upstream"),
        upstream_data=ws.upstream_data,
        gflops=None if gflops is None else round(float(gflops), 6),
        imagenet_top1=extra.get("imagenet_top1"),
        facts=facts,
    )


CATALOGUE_MAX_AGE_SECONDS = 300.0
"""After this, the catalogue's rows are rebuilt in the background (weights may have appeared in a cache meanwhile)
while the old ones are still served."""


@dataclass(frozen=True)
class _CatalogueSnapshot:
    key: tuple
    built_at: float
    rows: tuple[WeightSetPublic, ...]


_catalogue_lock = threading.Lock()
_catalogue_refreshing = threading.Event()
_catalogue_snapshot: _CatalogueSnapshot | None = None


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _catalogue_key() -> tuple:
    """What invalidates the rows: the user zoo file, and the weight caches that `weights_present` looks in
    (a download adds a folder to them, which changes their modification time)."""
    user_file = get_settings().user_zoo_file
    user_mtime = _mtime(user_file)
    user_key = (str(user_file), user_mtime) if user_mtime is not None else None  # no file: no user models
    return (
        user_key,
        _hub_cache(),
        _mtime(Path(hf_constants.HF_HUB_CACHE)),
        _mtime(Path(torch.hub.get_dir()) / "checkpoints"),
    )


def _hub_cache() -> tuple[str, int | None]:
    """The hub cache the zoo reads now (`HF_HOME`/`HF_HUB_CACHE` at call time) and its modification time."""
    cache = hub_cache_dir()
    return str(cache), _mtime(cache)


def _build_catalogue(key: tuple) -> _CatalogueSnapshot:
    start = time.perf_counter()
    rows = tuple(weight_set_public(ws) for ws in list_weight_sets())
    logger.info("zoo catalogue: %d weight sets in %.2f s", len(rows), time.perf_counter() - start)
    return _CatalogueSnapshot(key=key, built_at=time.monotonic(), rows=rows)


def _refresh_catalogue(key: tuple) -> None:
    global _catalogue_snapshot
    try:
        fresh = _build_catalogue(key)
        with _catalogue_lock:
            _catalogue_snapshot = fresh
    except Exception:  # a failed refresh keeps the old rows; the next call tries again
        logger.warning("could not refresh the zoo catalogue", exc_info=True)
    finally:
        _catalogue_refreshing.clear()


def catalogue() -> tuple[WeightSetPublic, ...]:
    """Every weight set's public row (embedded, user, timm's ~1,800 pretrained tags), sorted by name: built once per
    process, rebuilt when the user zoo or a weight cache changes; after CATALOGUE_MAX_AGE_SECONDS the old rows are
    served while new ones are built in the background. The API's /zoo and the dashboard's Zoo page both read it."""
    global _catalogue_snapshot
    key = _catalogue_key()
    snap = _catalogue_snapshot
    if snap is None or snap.key != key:
        with _catalogue_lock:
            snap = _catalogue_snapshot
            if snap is None or snap.key != key:
                snap = _catalogue_snapshot = _build_catalogue(key)
    elif time.monotonic() - snap.built_at > CATALOGUE_MAX_AGE_SECONDS and not _catalogue_refreshing.is_set():
        _catalogue_refreshing.set()
        threading.Thread(target=_refresh_catalogue, args=(key,), name="zoo-catalogue-refresh", daemon=True).start()
    return snap.rows


def refresh_catalogue() -> tuple[WeightSetPublic, ...]:
    """Rebuild the catalogue now (in the caller's thread: a finished pull calls it, so that its weights show as
    present as soon as the pull says it is done) and serve the new rows from then on."""
    global _catalogue_snapshot
    key = _catalogue_key()
    fresh = _build_catalogue(key)
    with _catalogue_lock:
        _catalogue_snapshot = fresh
    return fresh.rows


def warm_catalogue() -> threading.Thread:
    """Build the catalogue in a background thread (at start-up), so that the first request finds it ready.

    The app joins the thread at shut-down: a thread outliving its app could read the settings of whatever
    environment comes next (as in a test suite) and cache them."""

    def run() -> None:
        try:
            catalogue()
        except Exception:
            logger.warning("could not build the zoo catalogue at start-up", exc_info=True)

    thread = threading.Thread(target=run, name="zoo-catalogue-warm", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class JobAudit:
    """A finished job's stored ranking audit (`jobs.ranking_audit`), with its dataset's name (None when the
    dataset is gone)."""

    job_id: int
    dataset_id: int
    dataset: str | None
    audit: dict[str, Any]


def ranking_audits(limit: int) -> tuple[list[JobAudit], int]:
    """The ranking audits of the finished jobs among the newest `limit` jobs, newest first, and how many jobs
    there are in all (more than `limit`: the list is cut)."""
    out: list[JobAudit] = []
    with session_scope() as s:
        jobs, total = registry.list_jobs(s, limit=limit)
        names: dict[int, str | None] = {}
        for job in jobs:
            if job.status not in FINISHED or not job.ranking_audit:
                continue
            if job.dataset_id not in names:
                try:
                    names[job.dataset_id] = registry.get_dataset(s, job.dataset_id).name
                except NotFoundError:
                    names[job.dataset_id] = None
            out.append(JobAudit(job.id, job.dataset_id, names[job.dataset_id], job.ranking_audit))
    return out, total


SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def split_names(counts: dict[str, Any]) -> list[str]:
    """A dataset's splits in reading order: train, val, test, then any other by name."""
    return sorted(counts, key=lambda s: (SPLIT_ORDER.get(s, 3), s))


@dataclass(frozen=True)
class DatasetFacts:
    """A dataset's registry row: ids, names and counts per split and class. `source` (where its files are) stays
    on the server: it names where thumbnails are made from and is never shown."""

    id: int
    name: str
    fingerprint: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    created_at: datetime | None
    source: dict[str, Any] = field(repr=False)


def dataset_facts(dataset_id: int) -> DatasetFacts:
    """The dataset's recorded facts (no file is read); NotFoundError when there is no such dataset."""
    with session_scope() as s:
        row = registry.get_dataset(s, dataset_id)
        return DatasetFacts(
            id=row.id,
            name=row.name,
            fingerprint=row.fingerprint,
            classes=list(row.classes or []),
            counts=dict(row.counts or {}),
            created_at=getattr(row, "created_at", None),
            source=row.source,
        )


def dataset_samples(dataset: DatasetFacts) -> dict[str, list[list[int]]]:
    """The indices of the thumbnails per split and class: made at registration, or now for a dataset registered
    before thumbnails existed (then only read from disk). A ZooensError says why there are none."""
    settings = get_settings()
    folder = thumbnails_dir(settings, dataset.fingerprint)
    found = sample_indices(folder)
    if found is None:
        folder = ensure_thumbnails(settings, dataset.source, dataset.fingerprint)
        found = sample_indices(folder)
    return found or {}


def thumbnail_path(dataset_id: int, split: str, index: int) -> Path:
    """The file of one thumbnail, made at registration (NotFoundError: no such dataset, split or thumbnail)."""
    dataset = dataset_facts(dataset_id)
    if split not in dataset.counts:
        known = ", ".join(split_names(dataset.counts))
        raise NotFoundError(f"Dataset {dataset_id} has no split {split!r}; it has {known}.")
    return thumbnail_file(thumbnails_dir(get_settings(), dataset.fingerprint), split, index)
