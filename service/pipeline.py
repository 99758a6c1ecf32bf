"""A job as a list of units of work: embed+score each model, fine-tune the top-K, ensemble.

Each unit's result is written to the registry when it finishes, so a job interrupted
anywhere resumes without redoing finished units. The heavy part of a unit
(`execute_unit`) needs only a serialisable `JobSpec` and the shared file system, so the
same function runs in-process (`LocalExecutor`) or as a Ray task (`RayExecutor`).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from zooens.errors import ConfigError, DatasetError, JobError
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

EMBED = "embed"
FINETUNE = "finetune"
ENSEMBLE = "ensemble"
STAGES = (EMBED, FINETUNE, ENSEMBLE)


@dataclass
class JobParams:
    """What a user chooses for a job. Defaults suit a VTAB-1k-sized dataset on a CPU."""

    top_k: int = 3
    k: int = 10
    strategies: list[str] = field(default_factory=lambda: ["linear"])
    learning_rates: list[float] | None = None
    steps: list[int] | None = None
    batch_size: int | None = None
    ensemble_size: int = 10
    seed: int = 0
    resolution: int | None = None
    n_train: int = 800
    n_val: int = 200
    max_test: int | None = None
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> "JobParams":
        from zooens.ensemble.finetune import STRATEGIES

        if self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}.")
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, got {self.k}.")
        if self.ensemble_size < 1:
            raise ConfigError(f"ensemble_size must be at least 1, got {self.ensemble_size}.")
        if not self.strategies:
            raise ConfigError("Give at least one fine-tuning strategy, e.g. 'linear'.")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ConfigError(
                f"Unknown strategy {', '.join(unknown)}; choose from {', '.join(sorted(STRATEGIES))}."
            )
        if self.resolution is not None and not 16 <= self.resolution <= 1024:
            raise ConfigError(f"resolution must be between 16 and 1024 pixels, got {self.resolution}.")
        for name, values in (("learning_rates", self.learning_rates), ("steps", self.steps)):
            if values is not None and (not values or any(v <= 0 for v in values)):
                raise ConfigError(f"{name} must be a non-empty list of positive numbers, got {values}.")
        if self.n_train < 2 or self.n_val < 1:
            raise ConfigError("n_train must be at least 2 and n_val at least 1.")
        self._validate_strategy_options()
        return self

    def _validate_strategy_options(self) -> None:
        from zooens.ensemble.adapters import ADAPTERS, make_config
        from zooens.ensemble.finetune import STRATEGIES

        for name, options in self.strategy_options.items():
            if name not in STRATEGIES:
                raise ConfigError(f"Options given for unknown strategy {name!r}; strategies: {', '.join(sorted(STRATEGIES))}.")
            if not isinstance(options, dict):
                raise ConfigError(f"Options of {name} must be a mapping of option names to values.")
            if name in ADAPTERS:
                make_config(name, options)  # unknown keys and bad values fail now, not in a worker

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobParams":
        known = {f for f in cls.__dataclass_fields__}
        extra = set(data) - known
        if extra:
            raise ConfigError(f"Unknown job parameter(s) {sorted(extra)}; known: {sorted(known)}.")
        return cls(**data)


@dataclass(frozen=True)
class JobSpec:
    """Everything a unit needs, serialisable, so a unit can run in another process."""

    job_id: int
    dataset_source: str
    zoo: list[str]
    params: dict[str, Any]
    home: str
    cache_dir: str

    @property
    def job_params(self) -> JobParams:
        return JobParams.from_dict(self.params)

    @property
    def job_dir(self) -> Path:
        return Path(self.home) / "artifacts" / "jobs" / str(self.job_id)


def prepare_splits(ds, params: JobParams):
    """Train/val/test for a job: splits as given when a val split exists, else drawn from train."""
    from zooens.selection.datasets import vtab_split

    if "train" not in ds.splits:
        raise DatasetError(
            f"Dataset {ds.name!r} has no 'train' split (it has {sorted(ds.splits)}); "
            "put the training images under train/ or give them without split folders."
        )
    if "val" in ds.splits:
        prepared = ds
        if params.max_test is not None and "test" in ds.splits:
            prepared = vtab_split(ds, n_train=None, n_val=None, seed=params.seed, max_test=params.max_test)
        return prepared
    n_available = len(ds.split("train"))
    n_train, n_val = params.n_train, params.n_val
    if n_train + n_val > n_available:
        n_val = max(1, round(n_available * n_val / (n_train + n_val)))
        n_train = n_available - n_val
    return vtab_split(ds, n_train=n_train, n_val=n_val, seed=params.seed, max_test=params.max_test)


def prepare_job_dataset(ds, params: JobParams):
    """The splits a job uses, checked: every class needs two training examples (leave-one-out)."""
    from zooens.selection.datasets import validate

    return validate(prepare_splits(ds, params), min_per_class=2)


@lru_cache(maxsize=4)
def _load_job_dataset(source: str, params_json: str):
    from zooens.selection.datasets import load_dataset

    return prepare_job_dataset(load_dataset(source), JobParams.from_dict(json.loads(params_json)))


def job_dataset(spec: JobSpec):
    """The job's dataset with its train/val/test splits (cached per process)."""
    return _load_job_dataset(spec.dataset_source, json.dumps(spec.params, sort_keys=True))


def _cache(spec: JobSpec):
    from zooens.selection.cache import EmbeddingCache

    return EmbeddingCache(Path(spec.cache_dir))


def _device() -> str:
    from zooens.utils import resolve_device

    return resolve_device(get_settings().device)


def finetune_key(model: str, strategy: str, lr: float, steps: int) -> str:
    return f"{FINETUNE}:{model}:{strategy}:lr={lr:g}:steps={steps}"


def parse_finetune_key(key: str) -> tuple[str, str, float, int]:
    _, model, strategy, lr, steps = key.split(":")
    return model, strategy, float(lr.split("=")[1]), int(steps.split("=")[1])


def sweep_for(strategy: str, params: JobParams):
    """The hyper-parameter grid of one strategy: the user's values or the strategy's defaults."""
    from zooens.ensemble.finetune import STRATEGIES, SweepConfig

    defaults = getattr(STRATEGIES[strategy], "default_sweep", None) or SweepConfig()
    return SweepConfig(
        learning_rates=tuple(params.learning_rates or defaults.learning_rates),
        steps=tuple(params.steps or defaults.steps),
        batch_size=params.batch_size or defaults.batch_size,
        seed=params.seed,
    )


def plan_finetune_units(ranking: list[dict[str, Any]], params: JobParams) -> list[str]:
    """Unit keys for the sweep over the top-K models of a ranking (deterministic order)."""
    keys: list[str] = []
    for row in ranking[: params.top_k]:
        for strategy in params.strategies:
            for hp in sweep_for(strategy, params).grid():
                keys.append(finetune_key(row["model"], strategy, hp["lr"], hp["steps"]))
    return keys


def execute_unit(spec: JobSpec, key: str, progress: bool = True) -> dict[str, Any]:
    """Do one unit's heavy work and return its JSON-able result (files written under the job dir)."""
    kind = key.split(":", 1)[0]
    if kind == EMBED:
        return _execute_embed(spec, key.split(":", 1)[1], progress)
    if kind == FINETUNE:
        return _execute_finetune(spec, key, progress)
    raise JobError(f"Unknown unit kind in {key!r}.")


def _execute_embed(spec: JobSpec, model: str, progress: bool) -> dict[str, Any]:
    from zooens.selection.embed import embed_with_cache
    from zooens.selection.ranking import score_model

    params = spec.job_params
    ds = job_dataset(spec)
    cache = _cache(spec)
    score = score_model(
        model, ds, k=params.k, cache=cache, resolution=params.resolution, device=_device(), progress=progress
    )
    result = asdict(score)
    embeddings = []
    for split in ("train", "val"):
        res = embed_with_cache(model, ds, split, cache=cache, resolution=params.resolution, device=_device(), progress=False)
        embeddings.append(
            {
                "split": split,
                "key": res.key,
                "path": str(res.path),
                "n": int(res.embeddings.shape[0]),
                "dim": int(res.embeddings.shape[1]),
            }
        )
    result["embeddings"] = embeddings
    result["dataset_fingerprint"] = ds.fingerprint
    return result


def _execute_finetune(spec: JobSpec, key: str, progress: bool) -> dict[str, Any]:
    from zooens.ensemble.finetune import RunSpec, run_finetune

    params = spec.job_params
    model, strategy, lr, steps = parse_finetune_key(key)
    sweep = sweep_for(strategy, params)
    options = dict(params.strategy_options.get(strategy, {}))
    run_spec = RunSpec(
        model=model,
        strategy=strategy,
        lr=lr,
        steps=steps,
        seed=params.seed,
        resolution=params.resolution,
        batch_size=sweep.batch_size,
        options=options,
    )
    ds = job_dataset(spec)
    result = run_finetune(run_spec, ds, cache=_cache(spec), device=_device(), progress=progress)
    run_dir = spec.job_dir / "runs" / _safe(key)
    run_dir.mkdir(parents=True, exist_ok=True)
    result.artifact.save(run_dir / "artifact")
    probs_path = run_dir / "probs.npz"
    arrays = {"val": result.val_proba}
    if result.test_proba is not None:
        arrays["test"] = result.test_proba
    np.savez(probs_path, **arrays)
    return {
        "model": model,
        "strategy": strategy,
        "hparams": dict(result.hparams),
        "seed": params.seed,
        "val_ce": float(result.val_ce),
        "val_acc": float(result.val_acc),
        "test_acc": None if result.test_acc is None else float(result.test_acc),
        "seconds": float(result.seconds),
        "updated_params": int(result.updated_params),
        "update_bytes": int(result.update_bytes),
        "artifact_path": str(run_dir / "artifact"),
        "probs_path": str(probs_path),
    }


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)


def build_ensemble(runs: list[dict[str, Any]], ds, params: JobParams) -> dict[str, Any]:
    """Greedy ensemble over the runs' val probabilities; test accuracy when a test split exists."""
    from zooens.ensemble.greedy import GreedyEnsembleSelector

    if not runs:
        raise JobError("No fine-tune run finished, so there is nothing to ensemble.")
    y_val = ds.split("val").labels
    probs = [np.load(r["probs_path"]) for r in runs]
    P_val = np.stack([p["val"] for p in probs])
    selector = GreedyEnsembleSelector(max_size=params.ensemble_size).fit(P_val, y_val)
    val_proba = selector.predict_proba(P_val)
    out: dict[str, Any] = {
        "members": [
            {"run_index": i, "weight": float(w)} for i, w in enumerate(selector.weights_) if w > 0
        ],
        "selected": [int(i) for i in selector.selected_[: selector.best_size_]],
        "val_ce": float(selector.val_loss_),
        "val_acc": float((val_proba.argmax(1) == y_val).mean()),
        "loss_curve": [float(v) for v in selector.loss_curve_],
        "size": int(selector.best_size_),
        "test_acc": None,
    }
    if "test" in ds.splits and all("test" in p for p in probs):
        y_test = ds.split("test").labels
        P_test = np.stack([p["test"] for p in probs])
        out["test_acc"] = float((selector.predict_proba(P_test).argmax(1) == y_test).mean())
    return out


# --------------------------------------------------------------------------------------
# Executors: where units run. Both return results to the caller, which writes the registry.


class LocalExecutor:
    """Runs units one after another in this process."""

    name = "local"

    def map(
        self, spec: JobSpec, keys: list[str], on_done: Callable[[str, dict[str, Any]], None], progress: bool = True
    ) -> None:
        for key in keys:
            on_done(key, execute_unit(spec, key, progress))


def get_executor(name: str | None = None):
    name = name or get_settings().executor
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from zooens.service.executors_ray import RayExecutor

        return RayExecutor(address=get_settings().ray_address)
    raise ConfigError(f"Unknown executor {name!r}; set ZOOENS_EXECUTOR to 'local' or 'ray'.")
