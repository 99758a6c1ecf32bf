"""A job as units of work, each with a key, a handler and a typed result.

    embed:<model_name>                                   rank one model (kNN on its embeddings)
    finetune:<model_name>:<strategy>:lr=<lr>:steps=<n>   one run of the sweep
    ensemble                                             the greedy ensemble of the job's runs

`UnitKey` formats and parses keys; `HANDLERS` maps a unit kind to the function that does the
work (`execute_unit` runs it: in this process, or in a Ray task) and `RECORDERS` to the one
that writes its typed result to the registry (always in the process that owns the job). A
handler needs only the serialisable `JobSpec` and the shared file system.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlalchemy.orm import Session

from zooens.ensemble import GreedyEnsembleSelector, RunSpec, get_strategy, run_finetune
from zooens.ensemble.artifacts import load_artifact_model
from zooens.ensemble.cost import ForwardCost, backbone_key, cost_vector, ensemble_cost, forward_cost
from zooens.ensemble.specs import resolve_augmentation
from zooens.ensemble.strategies.auto import AUTO, resolve_auto
from zooens.ensemble.strategies.full import bit_rule_for
from zooens.errors import DatasetError, JobError
from zooens.selection.audit import audit_ranking, best_accuracy_per_model
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, check_class_counts, load_dataset, validate, vtab_split
from zooens.selection.embed import embedding_key
from zooens.selection.ranking import score_model
from zooens.service import registry
from zooens.service.dataroots import allowed_roots
from zooens.service.jobs.params import JobParams
from zooens.settings import get_settings
from zooens.utils import resolve_device

__all__ = [
    "EMBED",
    "ENSEMBLE",
    "FINETUNE",
    "STAGES",
    "EmbedResult",
    "EnsembleResult",
    "FinetuneResult",
    "JobSpec",
    "AUDIT_STRATEGY",
    "UnitKey",
    "drawn_split_sizes",
    "execute_unit",
    "job_dataset",
    "plan_finetune_units",
    "prepare_job_dataset",
    "prepare_splits",
    "rank_models",
    "record_unit",
    "result_from_json",
]

logger = logging.getLogger(__name__)

EMBED = "embed"
FINETUNE = "finetune"
ENSEMBLE = "ensemble"
STAGES = (EMBED, FINETUNE, ENSEMBLE)
MIN_PER_CLASS = 2  # leave-one-out kNN needs a neighbour of the same class
COST_FILE = "cost.json"  # a run's (backbone key, forward cost), beside its probabilities
AUDIT_STRATEGY = "linear"
"""The cheapest strategy (a head on cached embeddings): `audit_ranking` runs it on the models beyond the top-K."""


@dataclass(frozen=True, order=True)
class UnitKey:
    """The key of one unit; `str(key)` is what the registry stores, `UnitKey.parse` reads it back."""

    kind: str
    model_name: str | None = None
    strategy: str | None = None
    lr: float | None = None
    steps: int | None = None

    @classmethod
    def embed(cls, model_name: str) -> UnitKey:
        return cls(EMBED, model_name)

    @classmethod
    def finetune(cls, model_name: str, strategy: str, lr: float, steps: int) -> UnitKey:
        return cls(FINETUNE, model_name, strategy, float(lr), int(steps))

    @classmethod
    def ensemble(cls) -> UnitKey:
        return cls(ENSEMBLE)

    def __str__(self) -> str:
        if self.kind == EMBED:
            return f"{EMBED}:{self.model_name}"
        if self.kind == FINETUNE:
            return f"{FINETUNE}:{self.model_name}:{self.strategy}:lr={self.lr:g}:steps={self.steps}"
        return ENSEMBLE

    @classmethod
    def parse(cls, text: str) -> UnitKey:
        """The key a string spells; JobError if it is not a unit key."""
        kind, _, rest = text.partition(":")
        try:
            if kind == EMBED and rest:
                return cls.embed(rest)
            if kind == FINETUNE:
                model_name, strategy, lr, steps = rest.split(":")
                if not lr.startswith("lr=") or not steps.startswith("steps="):
                    raise ValueError(text)
                return cls.finetune(model_name, strategy, float(lr[3:]), int(steps[6:]))
            if kind == ENSEMBLE and not rest:
                return cls.ensemble()
        except ValueError:
            pass
        raise JobError(
            f"{text!r} is not a unit key; keys look like 'embed:<model>', "
            "'finetune:<model>:<strategy>:lr=<lr>:steps=<steps>' or 'ensemble'."
        )

    @property
    def slug(self) -> str:
        """The key as a file name."""
        return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in str(self))


def job_folder(home: Path, job_id: int) -> Path:
    """The folder of a job's runs and artifacts under ZOOENS_HOME (what `jobs delete` removes)."""
    return home / "artifacts" / "jobs" / str(job_id)


@dataclass(frozen=True)
class JobSpec:
    """Everything a unit needs, serialisable, so a unit can run in another process.

    `ranked_models` is filled once the embed stage is done (best first): the fine-tuning
    stage works on its top-K, and the strategies' `job_options` hook sees them.
    """

    job_id: int
    dataset_source: str
    dataset_fingerprint: str
    zoo_models: list[str]
    params: JobParams
    home: str
    cache_dir: str
    ranked_models: list[str] = field(default_factory=list)

    @property
    def job_dir(self) -> Path:
        return job_folder(Path(self.home), self.job_id)

    @property
    def selected_models(self) -> list[str]:
        return self.ranked_models[: self.params.top_k]


# --------------------------------------------------------------------------------------
# Typed results, one per unit kind: what the unit row stores and what the registry records.


@dataclass(frozen=True)
class UnitResult:
    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EmbeddingRecord:
    split: str
    key: str
    path: str
    n: int
    dim: int


@dataclass(frozen=True)
class EmbedResult(UnitResult):
    kind: ClassVar[str] = EMBED
    model_name: str
    k: int
    knn_accuracy: float
    val_accuracy: float | None
    logme: float | None
    embed_seconds: float
    images_per_s: float | None
    params: int | None
    embed_dim: int
    cached: bool
    dataset_fingerprint: str
    embeddings: list[EmbeddingRecord]
    knn_queries: int | None = None

    def score_fields(self) -> dict[str, Any]:
        """The columns of a kNN score row."""
        return {
            f: getattr(self, f)
            for f in (
                "model_name",
                "k",
                "knn_accuracy",
                "val_accuracy",
                "logme",
                "embed_seconds",
                "images_per_s",
                "params",
                "embed_dim",
                "knn_queries",
            )
        }


@dataclass(frozen=True)
class FinetuneResult(UnitResult):
    """One run of the sweep: `RunResult.summary()` plus where its files are, exactly the columns
    of a fine-tune run row (but its id)."""

    kind: ClassVar[str] = FINETUNE
    model_name: str
    strategy: str
    hparams: dict[str, Any]
    seed: int
    val_ce: float
    val_acc: float
    test_acc: float | None
    seconds: float
    updated_params: int
    update_bytes: int
    artifact_path: str
    probs_path: str
    gflops: float | None = None
    params_count: int | None = None
    latency_ms: float | None = None
    backbone_key: str | None = None


@dataclass(frozen=True)
class EnsembleMemberRecord:
    unit_key: str
    weight: float


@dataclass(frozen=True)
class EnsembleResult(UnitResult):
    kind: ClassVar[str] = ENSEMBLE
    members: list[EnsembleMemberRecord]
    selected: list[str]
    val_ce: float
    val_acc: float
    test_acc: float | None
    size: int
    loss_curve: list[float]
    max_gflops: float | None = None
    max_latency_ms: float | None = None
    gflops: float | None = None
    latency_ms: float | None = None
    front: dict[str, Any] | None = None


_RESULT_TYPES: dict[str, type[UnitResult]] = {EMBED: EmbedResult, FINETUNE: FinetuneResult, ENSEMBLE: EnsembleResult}
_NESTED = {("embed", "embeddings"): EmbeddingRecord, ("ensemble", "members"): EnsembleMemberRecord}


def result_from_json(kind: str, data: dict[str, Any]) -> UnitResult:
    """A stored unit result as its typed record (TypeError on unknown or missing fields)."""
    cls = _RESULT_TYPES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    for (owner, name), nested in _NESTED.items():
        if owner == kind:
            values[name] = [nested(**item) for item in values.get(name, [])]
    return cls(**values)


# --------------------------------------------------------------------------------------
# The job's data


def no_train_split(name: str, splits: Iterable[str]) -> DatasetError:
    return DatasetError(
        f"Dataset {name!r} has no 'train' split (it has {sorted(splits)}); "
        "put the training images under train/ or give them without split folders."
    )


def prepare_splits(ds: ImageDataset, params: JobParams) -> ImageDataset:
    """Train/val/test for a job: splits as given when a val split exists, else drawn from train."""
    if "train" not in ds.splits:
        raise no_train_split(ds.name, ds.splits)
    if "val" in ds.splits:
        if params.max_test is not None and "test" in ds.splits:
            return vtab_split(ds, n_train=None, n_val=None, seed=params.seed, max_test=params.max_test)
        return ds
    n_train, n_val = drawn_split_sizes(len(ds.split("train")), params)
    return vtab_split(ds, n_train=n_train, n_val=n_val, seed=params.seed, max_test=params.max_test)


def drawn_split_sizes(n_available: int, params: JobParams) -> tuple[int, int]:
    """(n_train, n_val) drawn from a train split of `n_available` images when there is no val
    split: the job's own sizes, scaled down in proportion when the split is smaller. Submission
    uses it too, to check `k` against the training set the job will really have."""
    n_train, n_val = params.n_train, params.n_val
    if n_train + n_val > n_available:
        n_val = max(1, round(n_available * n_val / (n_train + n_val)))
        n_train = n_available - n_val
    return n_train, n_val


def check_small_classes(name: str, train_counts: dict[str, int], params: JobParams) -> None:
    """Apply `params.small_classes` to a train split's per-class counts.

    A class with fewer than MIN_PER_CLASS training examples can never be its own leave-one-out
    neighbour (with one) or be predicted by kNN at all (with none); it is still a class of the
    label space, scored on val and test. 'error' refuses the job (a user dataset with such a class
    is more often a mistake than a design), 'warn' logs it and runs, 'allow' runs silently (VTAB-1k,
    where 800 examples over 397 SUN397 classes leave many with one or none, by design).
    """
    if params.small_classes == "allow":
        check_class_counts(name, train_counts, min_per_class=0)  # some images, whatever the classes
        return
    try:
        check_class_counts(name, train_counts, min_per_class=MIN_PER_CLASS)
    except DatasetError as exc:
        if params.small_classes == "error":
            raise DatasetError(
                f"{exc} Or run the job with them: small_classes 'warn' or 'allow' (`--small-classes allow`)."
            ) from None
        logger.warning("%s The job runs with them (small_classes=warn).", exc)


def prepare_job_dataset(ds: ImageDataset, params: JobParams) -> ImageDataset:
    """The splits a job uses, checked: labels within the classes, and classes with fewer than two
    training examples as `params.small_classes` says (`check_small_classes`)."""
    prepared = validate(prepare_splits(ds, params), min_per_class=0)
    counts = np.bincount(prepared.split("train").labels, minlength=len(prepared.classes))
    check_small_classes(prepared.name, dict(zip(prepared.classes, (int(n) for n in counts), strict=False)), params)
    return prepared


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


def _cache(spec: JobSpec) -> EmbeddingCache:
    return EmbeddingCache(Path(spec.cache_dir))


def _device() -> str:
    return resolve_device(get_settings().device)


# --------------------------------------------------------------------------------------
# Planning


def rank_models(results: list[EmbedResult]) -> list[str]:
    """Model names best first: kNN accuracy, then val accuracy, then name."""
    ordered = sorted(results, key=lambda r: (-r.knn_accuracy, -(r.val_accuracy or 0.0), r.model_name))
    return [r.model_name for r in ordered]


def resolved_strategies(params: JobParams, device: str | None = None) -> list[str]:
    """The job's strategies with `auto` resolved for this worker's device, each once, in order.

    Planning runs on the worker that runs the units (`run_job`), so the choice matches the hardware
    the runs get; it is logged, and each run's hparams record `strategy_requested: auto`.
    """
    device = _device() if device is None else device
    out: list[str] = []
    for name in params.strategies:
        resolved = resolve_auto(device) if name == AUTO else name
        if name == AUTO:
            logger.info("strategy auto -> %s on this worker (%s)", resolved, device)
        if resolved not in out:
            out.append(resolved)
    return out


def plan_finetune_units(
    ranked_models: list[str], params: JobParams, device: str | None = None, *, audit: bool = True
) -> list[UnitKey]:
    """The sweep over the top-K models of a ranking, in a deterministic order (`auto` resolved).

    With `params.audit_ranking` = N (and `audit`), the audit runs follow: `AUDIT_STRATEGY`'s sweep on the
    N models ranked after the top-K, and on the top-K too when the job's own strategies do not include
    it, so that every audited model is fine-tuned alike. The ensemble uses `audit=False`: it is built
    from the top-K's runs only, as without an audit.
    """
    keys: list[UnitKey] = []
    strategies = resolved_strategies(params, device)
    for model_name in ranked_models[: params.top_k]:
        for strategy in strategies:
            for hp in params.sweep_for(strategy).grid():
                keys.append(UnitKey.finetune(model_name, strategy, hp["lr"], hp["steps"]))
    if audit and params.audit_ranking:
        for model_name in ranked_models[: params.top_k + params.audit_ranking]:
            for hp in params.sweep_for(AUDIT_STRATEGY).grid():
                key = UnitKey.finetune(model_name, AUDIT_STRATEGY, hp["lr"], hp["steps"])
                if key not in keys:
                    keys.append(key)
    return keys


# --------------------------------------------------------------------------------------
# Handlers: the heavy work of a unit, JSON-able results, files under the job's folder.


def _execute_embed(spec: JobSpec, key: UnitKey, progress: bool) -> EmbedResult:
    params = spec.params
    ds = job_dataset(spec)
    cache = _cache(spec)
    assert key.model_name is not None
    score = score_model(
        key.model_name,
        ds,
        k=params.k,
        cache=cache,
        resolution=params.resolution,
        preprocessing=params.preprocessing,
        device=_device(),
        progress=progress,
    )
    embeddings = []
    for split in ("train", "val"):  # score_model stored them: name the entries, read nothing again
        emb_key = embedding_key(
            key.model_name, ds, split, resolution=params.resolution, preprocessing=params.preprocessing
        )
        embeddings.append(
            EmbeddingRecord(
                split=split,
                key=emb_key,
                path=str(cache.path(emb_key)),
                n=len(ds.split(split)),
                dim=int(score.embed_dim),
            )
        )
    return EmbedResult(
        model_name=score.model_name,
        k=score.k,
        knn_accuracy=float(score.knn_accuracy),
        val_accuracy=_finite(score.val_accuracy),
        logme=_finite(score.logme),
        embed_seconds=float(score.embed_seconds),
        images_per_s=None if score.images_per_s is None else float(score.images_per_s),
        params=score.params,
        embed_dim=int(score.embed_dim),
        cached=bool(score.cached),
        dataset_fingerprint=ds.fingerprint,
        embeddings=embeddings,
        knn_queries=score.knn_queries,
    )


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _execute_finetune(spec: JobSpec, key: UnitKey, progress: bool) -> FinetuneResult:
    params = spec.params
    assert key.model_name is not None and key.strategy is not None and key.lr is not None and key.steps is not None
    strategy = get_strategy(key.strategy)
    options = strategy.job_options(params.options_for(key.strategy), selected_models=spec.selected_models)
    ds = job_dataset(spec)
    steps = key.steps
    if key.strategy == "full" and params.steps is None:
        steps = bit_rule_for(ds, _device()).steps  # BiT's schedule length for this dataset's size
    augmentation = resolve_augmentation(params.augmentation, key.strategy, ds.extra)
    run_spec = RunSpec(
        model_name=key.model_name,
        strategy=key.strategy,
        lr=key.lr,
        steps=steps,
        seed=params.seed,
        resolution=params.resolution,
        batch_size=params.sweep_for(key.strategy).batch_size,
        options=options,
        augmentation=augmentation,
        preprocessing=params.preprocessing,
    )
    result = run_finetune(run_spec, ds, cache=_cache(spec), device=_device(), progress=progress)
    if AUTO in params.strategies and key.strategy == resolve_auto(_device()) and key.strategy not in params.strategies:
        result.hparams = {**result.hparams, "strategy_requested": AUTO}
    run_dir = spec.job_dir / "runs" / key.slug
    run_dir.mkdir(parents=True, exist_ok=True)
    result.artifact.save(run_dir / "artifact")
    probs_path = run_dir / "probs.npz"
    arrays = {"val": result.val_proba}
    if result.test_proba is not None:
        arrays["test"] = result.test_proba
    np.savez(probs_path, **arrays)
    pass_key = backbone_key(
        key.model_name, key.strategy, resolution=params.resolution, preprocessing=params.preprocessing, run_key=str(key)
    )
    cost = _PASS_COSTS.get((pass_key, _device()))
    if cost is None:  # runs sharing a frozen backbone (linear) share one pass: counted and timed once
        model, data_cfg = load_artifact_model(result.artifact, device=_device())
        cost = forward_cost(model.eval(), tuple(int(v) for v in data_cfg["input_size"][1:]), device=_device())
        del model
        if get_strategy(key.strategy).shares_backbone:
            _PASS_COSTS[(pass_key, _device())] = cost
    (run_dir / COST_FILE).write_text(json.dumps({"backbone_key": pass_key, "cost": cost.to_dict()}))
    return FinetuneResult(
        **result.summary(),
        seed=params.seed,
        artifact_path=str(run_dir / "artifact"),
        probs_path=str(probs_path),
        gflops=cost.gflops,
        params_count=cost.params,
        latency_ms=cost.latency_ms,
        backbone_key=pass_key,
    )


_PASS_COSTS: dict[tuple[str, str], ForwardCost] = {}
"""Forward costs of shared passes measured in this process, by (backbone key, device)."""


def _run_costs(spec: JobSpec, run_keys: list[UnitKey]) -> list[tuple[str, ForwardCost]] | None:
    """(backbone key, forward cost) of each run, from the files its unit wrote; runs of one key get the
    first one's cost (their latencies differ only by measurement noise). None when a run has no cost
    (recorded before costs were measured)."""
    out: list[tuple[str, ForwardCost]] = []
    by_key: dict[str, ForwardCost] = {}
    for k in run_keys:
        path = spec.job_dir / "runs" / k.slug / COST_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        cost = by_key.setdefault(data["backbone_key"], ForwardCost.from_dict(data["cost"]))
        out.append((data["backbone_key"], cost))
    return out


def _execute_ensemble(spec: JobSpec, key: UnitKey, progress: bool) -> EnsembleResult:
    """Greedy ensemble over the sweep's val probabilities, in planning order (deterministic)."""
    run_keys = plan_finetune_units(spec.ranked_models, spec.params, audit=False)
    if not run_keys:
        raise JobError("No fine-tune run finished, so there is nothing to ensemble.")
    ds = job_dataset(spec)
    probs = [np.load(spec.job_dir / "runs" / k.slug / "probs.npz") for k in run_keys]
    y_val = ds.split("val").labels
    P_val = np.stack([p["val"] for p in probs])
    P_test = y_test = None
    if "test" in ds.splits and all("test" in p for p in probs):
        P_test, y_test = np.stack([p["test"] for p in probs]), ds.split("test").labels
    runs = _run_costs(spec, run_keys)
    budget = spec.params.budget
    if budget is not None and runs is None:
        raise JobError(
            "The runs of this job have no measured cost, so its budget cannot be applied; "
            "run the job again (`zooens jobs retry`)."
        )
    metric = budget[0] if budget else "gflops"
    costs = None if runs is None else cost_vector(runs, metric)
    selector = GreedyEnsembleSelector(
        max_size=spec.params.ensemble_size, costs=costs, max_cost=budget[1] if budget else None
    ).fit(P_val, y_val, P_test=P_test, y_test=y_test)
    val_proba = selector.predict_proba(P_val)
    test_acc = None
    if P_test is not None:
        test_acc = float((selector.predict_proba(P_test).argmax(1) == y_test).mean())
    chosen = [int(i) for i in selector.selected_[: selector.best_size_]]
    spent = None if runs is None else ensemble_cost(chosen, dict(enumerate(runs)))
    front = None
    if runs is not None:

        def point(p: Any) -> dict[str, Any]:
            return {**p.to_dict(), "members": [str(run_keys[i]) for i in p.members]}

        front = {
            "metric": metric,
            "budget": budget[1] if budget else None,
            "path": [point(p) for p in selector.path_],
            "front": [point(p) for p in selector.front_ or []],
            "complete": bool(selector.front_complete_),
        }
    return EnsembleResult(
        members=[
            EnsembleMemberRecord(unit_key=str(run_keys[i]), weight=float(w))
            for i, w in enumerate(selector.weights_)
            if w > 0
        ],
        selected=[str(run_keys[i]) for i in selector.selected_[: selector.best_size_]],
        val_ce=float(selector.val_loss_),
        val_acc=float((val_proba.argmax(1) == y_val).mean()),
        test_acc=test_acc,
        size=int(selector.best_size_),
        loss_curve=[float(v) for v in selector.loss_curve_],
        max_gflops=spec.params.max_gflops,
        max_latency_ms=spec.params.max_latency_ms,
        gflops=None if spent is None else spent.gflops,
        latency_ms=None if spent is None else spent.latency_ms,
        front=front,
    )


HANDLERS: dict[str, Callable[[JobSpec, UnitKey, bool], UnitResult]] = {
    EMBED: _execute_embed,
    FINETUNE: _execute_finetune,
    ENSEMBLE: _execute_ensemble,
}


def execute_unit(spec: JobSpec, key: str, progress: bool = True) -> UnitResult:
    """Do one unit's work (in any process that shares the job's file system)."""
    unit_key = UnitKey.parse(key)
    return HANDLERS[unit_key.kind](spec, unit_key, progress)


# --------------------------------------------------------------------------------------
# Recorders: a unit's typed result into the registry, in the caller's transaction.


def _record_embed(s: Session, job_id: int, key: str, result: UnitResult) -> None:
    assert isinstance(result, EmbedResult)
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
    registry.add_knn_score(s, job_id, **result.score_fields())


def _record_finetune(s: Session, job_id: int, key: str, result: UnitResult) -> None:
    assert isinstance(result, FinetuneResult)
    registry.add_finetune_run(s, job_id, unit_key=key, **result.to_json())


def _record_ensemble(s: Session, job_id: int, key: str, result: UnitResult) -> None:
    assert isinstance(result, EnsembleResult)
    run_ids = {r.unit_key: r.id for r in registry.list_finetune_runs(s, job_id)}
    missing = [m.unit_key for m in result.members if m.unit_key not in run_ids]
    if missing:
        raise JobError(f"Job {job_id} has no recorded runs {missing}; its ensemble cannot be stored.")
    registry.create_ensemble(
        s,
        job_id,
        members=[(run_ids[m.unit_key], m.weight) for m in result.members],
        val_ce=result.val_ce,
        val_acc=result.val_acc,
        test_acc=result.test_acc,
        size=result.size,
        loss_curve=result.loss_curve,
        max_gflops=result.max_gflops,
        max_latency_ms=result.max_latency_ms,
        gflops=result.gflops,
        latency_ms=result.latency_ms,
        front=result.front,
    )
    registry.set_ranking_audit(s, job_id, job_ranking_audit(s, job_id))


def job_ranking_audit(s: Session, job_id: int) -> dict[str, Any] | None:
    """How well the job's kNN ranking and LogME predicted the fine-tuned order (`selection.audit`).

    The fine-tuned accuracy of a model is its best validation accuracy; with an audit
    (`audit_ranking` > 0) only `AUDIT_STRATEGY`'s runs count, which every audited model has, so the
    models are compared alike. None when no run finished.
    """
    job = registry.get_job(s, job_id)
    params = JobParams.model_validate(job.params)
    runs = registry.list_finetune_runs(s, job_id)
    if params.audit_ranking:
        runs = [r for r in runs if r.strategy == AUDIT_STRATEGY]
    if not runs:
        return None
    accuracy = best_accuracy_per_model([(r.model_name, r.val_acc) for r in runs])
    ranking = registry.get_ranking(s, job_id)
    scores = {
        "knn": {r.model_name: r.knn_accuracy for r in ranking},
        "logme": {r.model_name: r.logme for r in ranking if r.logme is not None},
    }
    audit = audit_ranking(accuracy, scores, top_k=params.top_k).to_dict()
    return {
        **audit,
        "basis": f"best val accuracy of {AUDIT_STRATEGY} runs"
        if params.audit_ranking
        else "best val accuracy over each model's runs",
        "audited_models": len(accuracy),
    }


RECORDERS: dict[str, Callable[[Session, int, str, UnitResult], None]] = {
    EMBED: _record_embed,
    FINETUNE: _record_finetune,
    ENSEMBLE: _record_ensemble,
}


def record_unit(s: Session, job_id: int, key: str, result: UnitResult) -> None:
    """Write a unit's result rows (kNN score, run, ensemble) to the registry."""
    RECORDERS[result.kind](s, job_id, key, result)
