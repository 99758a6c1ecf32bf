"""A job's units: each one calls one pipeline stage and returns its record; recorders write records.

    pull:<model_name>                                    `pipeline.pull_weights`    -> `PullRecord`
    embed:<model_name>                                   `pipeline.rank_model`      -> `EmbedRecord`
    finetune:<model_name>:<strategy>:lr=<lr>:steps=<n>   `pipeline.finetune_run`    -> `RunRecord`
    ensemble                                             `pipeline.select_ensemble` -> `EnsembleRecord`

`execute_unit` runs a unit's handler (in this process, or in a Ray task); a handler needs only the
serialisable `JobSpec` and the shared file system. `record_unit` writes a record's rows to the
registry, always in the process that owns the job. Keys, planning and the records themselves live
in `zooens.pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from zooens.errors import DatasetError
from zooens.pipeline import (
    EMBED,
    ENSEMBLE,
    FINETUNE,
    PULL,
    EmbedRecord,
    EnsembleRecord,
    JobParams,
    PullRecord,
    RunRecord,
    ScoreRecord,
    UnitKey,
    audit_job_ranking,
    finetune_run,
    plan_finetune_units,
    prepare_job_dataset,
    pull_weights,
    rank_model,
    run_probabilities,
    select_ensemble,
)
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, load_dataset
from zooens.service import registry
from zooens.service.dataroots import allowed_roots
from zooens.settings import get_settings
from zooens.utils import resolve_device

__all__ = ["JobSpec", "execute_unit", "job_dataset", "job_folder", "record_unit", "result_from_json"]

UnitResult = BaseModel
"""A unit's record: `PullRecord`, `EmbedRecord`, `RunRecord` or `EnsembleRecord` (`RECORDS` maps the unit
kind to it)."""

RECORDS: dict[str, type[BaseModel]] = {
    PULL: PullRecord,
    EMBED: EmbedRecord,
    FINETUNE: RunRecord,
    ENSEMBLE: EnsembleRecord,
}


def result_from_json(key: str, data: dict[str, Any]) -> UnitResult:
    """A stored unit result as its record (pydantic's ValidationError on a missing field). A run stored
    before records named their unit gets its unit key from the unit."""
    kind = UnitKey.parse(key).kind
    if kind == FINETUNE:
        data = {"unit_key": key, **data}
    return RECORDS[kind].model_validate(data)


def job_folder(home: Path, job_id: int) -> Path:
    """The folder of a job's runs and artifacts under ZOOENS_HOME (what `jobs delete` removes)."""
    return home / "artifacts" / "jobs" / str(job_id)


@dataclass(frozen=True)
class JobSpec:
    """Everything a unit needs, serialisable, so a unit can run in another process.

    `ranked_models` is filled once the embed stage is done (best first): the fine-tuning stage works
    on its top-K, and the strategies' `job_options` hook sees them; `runs` (by unit key) once the
    fine-tuning stage is done: the ensemble is selected from their records.
    """

    job_id: int
    dataset_source: str
    dataset_fingerprint: str
    zoo_models: list[str]
    params: JobParams
    home: str
    cache_dir: str
    ranked_models: list[str] = field(default_factory=list)
    runs: dict[str, RunRecord] = field(default_factory=dict)

    @property
    def job_dir(self) -> Path:
        return job_folder(Path(self.home), self.job_id)

    @property
    def selected_models(self) -> list[str]:
        return self.ranked_models[: self.params.top_k]


@lru_cache(maxsize=4)
def _load_job_dataset(source: str, fingerprint: str, params_json: str) -> ImageDataset:
    ds = load_dataset(source, confine_to=allowed_roots(get_settings(), source))
    if fingerprint and ds.fingerprint != fingerprint:
        raise DatasetError(
            f"The data at {source} changed after it was registered (fingerprint "
            f"{ds.fingerprint[:12]} instead of {fingerprint[:12]}); register it again."
        )
    return prepare_job_dataset(ds, JobParams.model_validate_json(params_json))


def job_dataset(spec: JobSpec) -> ImageDataset:
    """The job's dataset with its train/val/test splits, fully checked (cached per process)."""
    return _load_job_dataset(spec.dataset_source, spec.dataset_fingerprint, spec.params.model_dump_json())


def _device() -> str:
    return resolve_device(get_settings().device)


# --------------------------------------------------------------------------------------
# Handlers: one pipeline stage each.


def _pull(spec: JobSpec, key: UnitKey, progress: bool) -> PullRecord:
    assert key.model_name is not None
    return pull_weights(key.model_name, progress=progress)


def _embed(spec: JobSpec, key: UnitKey, progress: bool) -> EmbedRecord:
    assert key.model_name is not None
    cache = EmbeddingCache(Path(spec.cache_dir))
    return rank_model(job_dataset(spec), key.model_name, spec.params, cache=cache, device=_device(), progress=progress)


def _finetune(spec: JobSpec, key: UnitKey, progress: bool) -> RunRecord:
    record, _ = finetune_run(
        job_dataset(spec),
        key,
        spec.params,
        selected_models=spec.selected_models,
        cache=EmbeddingCache(Path(spec.cache_dir)),
        device=_device(),
        run_dir=spec.job_dir / "runs" / key.slug,
        progress=progress,
    )
    return record


def _ensemble(spec: JobSpec, key: UnitKey, progress: bool) -> EnsembleRecord:
    """The ensemble over the top-K's runs in planning order (the audit's extra runs are not candidates)."""
    runs = [spec.runs[str(k)] for k in plan_finetune_units(spec.ranked_models, spec.params, audit=False)]
    return select_ensemble(runs, [run_probabilities(r) for r in runs], job_dataset(spec), spec.params)


HANDLERS: dict[str, Callable[[JobSpec, UnitKey, bool], UnitResult]] = {
    PULL: _pull,
    EMBED: _embed,
    FINETUNE: _finetune,
    ENSEMBLE: _ensemble,
}


def execute_unit(spec: JobSpec, key: str, progress: bool = True) -> UnitResult:
    """Do one unit's work (in any process that shares the job's file system)."""
    unit_key = UnitKey.parse(key)
    return HANDLERS[unit_key.kind](spec, unit_key, progress)


# --------------------------------------------------------------------------------------
# Recorders: a unit's record into the registry, in the caller's transaction.


def _record_embed(s: Session, job_id: int, result: UnitResult) -> None:
    assert isinstance(result, EmbedRecord)
    for emb in result.embeddings:
        registry.record_embedding(
            s,
            cache_key=emb.key,
            model_name=result.model_name,
            dataset_fingerprint=result.dataset_fingerprint,
            split=emb.split,
            path=emb.path,
            n=emb.n,
            dim=emb.dim,
        )
    registry.add_knn_score(s, job_id, result.part(ScoreRecord))
    sizes = {emb.split: emb.n for emb in result.embeddings}  # the splits as drawn: the sizes the job really uses
    if "train" in sizes and "val" in sizes:
        registry.set_job_split_sizes(s, job_id, n_train=sizes["train"], n_val=sizes["val"])


def _record_finetune(s: Session, job_id: int, result: UnitResult) -> None:
    assert isinstance(result, RunRecord)
    registry.add_finetune_run(s, job_id, result)


def _record_ensemble(s: Session, job_id: int, result: UnitResult) -> None:
    """The ensemble and, now that every run is in, the job's ranking audit and its warnings (a small val
    split, a val cross-entropy near 0: `EnsembleRecord.warnings`), added to those of its submission."""
    assert isinstance(result, EnsembleRecord)
    registry.create_ensemble(s, job_id, result)
    params = JobParams.model_validate(registry.get_job(s, job_id).params)
    scores = [ScoreRecord.model_validate(row) for row in registry.get_ranking(s, job_id)]
    runs = [RunRecord.model_validate(row) for row in registry.list_finetune_runs(s, job_id)]
    registry.set_ranking_audit(s, job_id, audit_job_ranking(scores, runs, params))
    registry.add_job_warnings(s, job_id, result.warnings)


def _record_pull(s: Session, job_id: int, result: UnitResult) -> None:
    """Nothing beyond the unit's own result: the weights are in the hub cache, the zoo row is the model's."""
    assert isinstance(result, PullRecord)


RECORDERS: dict[str, Callable[[Session, int, UnitResult], None]] = {
    PULL: _record_pull,
    EMBED: _record_embed,
    FINETUNE: _record_finetune,
    ENSEMBLE: _record_ensemble,
}


def record_unit(s: Session, job_id: int, key: str, result: UnitResult) -> None:
    """Write a unit's record (kNN score, run, ensemble; a pull's stays with its unit) to the registry."""
    RECORDERS[UnitKey.parse(key).kind](s, job_id, result)
