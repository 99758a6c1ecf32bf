"""The stages of a job as functions of plain inputs (a prepared dataset, `JobParams`, records), each
returning its record: pull one model's missing weights, rank one model, fine-tune one run (its inference
cost included), select the ensemble (budget and front included), audit the ranking (with the static
priors). No SQL, no HTTP: the service's unit handlers call these one to one, and `zooens.pipeline.fit`
calls them in a loop.

Files: the embedding cache (given), and a run's artifact and probabilities when `run_dir` is given
(a worker shares them through ZOOENS_HOME); without it a run stays in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zooens.ensemble import GreedyEnsembleSelector, RunSpec, get_strategy, run_finetune
from zooens.ensemble.artifacts import load_artifact_model
from zooens.ensemble.calibration import (
    apply_temperature,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
)
from zooens.ensemble.cost import ForwardCost, backbone_key, cost_vector, ensemble_cost, forward_cost
from zooens.ensemble.results import RunResult, mean_cross_entropy
from zooens.ensemble.specs import resolve_augmentation
from zooens.errors import JobError, MissingWeightsError, ZooensError
from zooens.pipeline.checks import small_val_warning
from zooens.pipeline.params import JobParams
from zooens.pipeline.plan import AUDIT_STRATEGY, UnitKey, requested_strategy
from zooens.pipeline.records import (
    EmbeddingEntry,
    EmbedRecord,
    EnsembleMemberRecord,
    EnsembleRecord,
    PullRecord,
    RunRecord,
    ScoreRecord,
)
from zooens.selection.audit import audit_ranking, best_accuracy_per_model
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset
from zooens.selection.embed import embedding_key
from zooens.selection.ranking import score_model
from zooens.zoo import create_model, data_config, get_weight_set, model_facts, pull, taps_for

__all__ = [
    "RunProbabilities",
    "audit_job_ranking",
    "calibrate",
    "ensemble_warnings",
    "finetune_run",
    "probabilities",
    "pull_weights",
    "rank_model",
    "run_probabilities",
    "select_ensemble",
]

RunProbabilities = Mapping[str, np.ndarray]
"""A run's class probabilities by split: "val" always, "test" when the dataset has one."""

logger = logging.getLogger(__name__)

PROBS_FILE = "probs.npz"
ARTIFACT_DIR = "artifact"


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def pull_weights(model_name: str, *, progress: bool = True) -> PullRecord:
    """Fetch one model's weights from the Hugging Face hub when they are not here (`zooens.zoo.pull`:
    resumable, verified against the announced sha256, once however many workers ask at the same
    time). MissingWeightsError (OfflineError offline) when they cannot be had."""
    report = pull([model_name], max_workers=1, progress=progress)
    outcome = report.outcomes[0]
    if outcome.status == "failed":
        raise MissingWeightsError(f"Could not pull {model_name!r}: {outcome.message}")
    return PullRecord(model_name=model_name, status=outcome.status, files=list(outcome.files), bytes=outcome.bytes)


def tap_relatives(model_name: str, params: JobParams) -> list[str]:
    """What a job ranks beside `model_name` from the same forward pass: with `taps` "auto", its model and that
    model's `taps_for` taps (the model itself among them, whichever `model_name` is); none otherwise."""
    if params.taps != "auto":
        return []
    base = get_weight_set(model_name).base_name
    return [base, *taps_for(base)]


def rank_model(
    ds: ImageDataset, model_name: str, params: JobParams, *, cache: EmbeddingCache, device: str, progress: bool = True
) -> EmbedRecord:
    """Embed train and val with one model (through the cache) and score it (`selection.ranking`); a
    `k` of "auto" resolves there, from the training labels, and the record holds the k used. With
    `taps` "auto" the model's taps (a tap's model and fellow taps), which the job ranks too, are embedded in
    the same forward pass (`tap_relatives`)."""
    score = score_model(
        model_name,
        ds,
        family=tap_relatives(model_name, params),
        k=params.k,
        cache=cache,
        resolution=params.resolution,
        preprocessing=params.preprocessing,
        device=device,
        progress=progress,
    )
    embeddings = []
    for split in ("train", "val"):  # score_model stored them: name the entries, read nothing again
        key = embedding_key(model_name, ds, split, resolution=params.resolution, preprocessing=params.preprocessing)
        embeddings.append(
            EmbeddingEntry(split=split, key=key, path=str(cache.path(key)), n=len(ds.split(split)), dim=score.embed_dim)
        )
    return EmbedRecord(
        model_name=score.model_name,
        k=score.k,
        knn_accuracy=float(score.knn_accuracy),
        val_accuracy=_finite(score.val_accuracy),
        logme=_finite(score.logme),
        embed_seconds=float(score.embed_seconds),
        images_per_s=None if score.images_per_s is None else float(score.images_per_s),
        params=score.params,
        embed_dim=int(score.embed_dim),
        knn_queries=score.knn_queries,
        knn1_accuracy=None if score.knn1_accuracy is None else float(score.knn1_accuracy),
        cached=bool(score.cached),
        dataset_fingerprint=ds.fingerprint,
        embeddings=embeddings,
    )


_PASS_COSTS: dict[tuple[str, str], ForwardCost] = {}
"""Forward costs of shared passes measured in this process, by (backbone key, device): runs sharing a
frozen backbone (`linear`) share one pass, counted and timed once."""


def _pass_cost(pass_key: str, device: str, build: Any, *, shared: bool) -> ForwardCost:
    """The cost of the forward pass `pass_key` on `device`: `build()` gives (module, its data config) to
    measure (`ensemble.cost.forward_cost`); a `shared` pass (a frozen backbone's) is measured once per process."""
    cost = _PASS_COSTS.get((pass_key, device))
    if cost is None:
        model, data_cfg = build()
        cost = forward_cost(model.eval(), tuple(int(v) for v in data_cfg["input_size"][1:]), device=device)
        del model
        if shared:
            _PASS_COSTS[(pass_key, device)] = cost
    return cost


def _embedder_cost(model_name: str, params: JobParams, device: str) -> tuple[str, ForwardCost]:
    """The shared pass of a frozen `model_name` at the job's resolution and preprocessing: the key a
    `linear` run of it has (`backbone_key`), and the pass's cost."""
    pass_key = backbone_key(
        model_name, "linear", resolution=params.resolution, preprocessing=params.preprocessing, run_key=model_name
    )

    def build() -> tuple[Any, dict[str, Any]]:
        cfg = data_config(model_name, resolution=params.resolution, preprocessing=params.preprocessing)
        return create_model(model_name, num_classes=0), cfg

    return pass_key, _pass_cost(pass_key, device, build, shared=True)


def finetune_run(
    ds: ImageDataset,
    key: UnitKey,
    params: JobParams,
    *,
    selected_models: list[str],
    cache: EmbeddingCache,
    device: str,
    run_dir: Path | None = None,
    progress: bool = True,
) -> tuple[RunRecord, RunResult]:
    """One run of the sweep (`key`: model, strategy, lr, steps) and its record, inference cost included.

    The strategy's hooks fill what is strategy-specific (`job_options`: e.g. aft's teachers from
    `selected_models`, the top-K; `job_steps`: e.g. BiT's schedule length for `full`). With `run_dir`,
    the artifact and the probabilities are saved there and the record names them; the `RunResult`
    (probabilities and artifact in memory) is returned either way.
    """
    if key.model_name is None or key.strategy is None or key.lr is None or key.steps is None:
        raise JobError(f"{key} is not a fine-tune unit.")
    strategy = get_strategy(key.strategy)
    run_spec = RunSpec(
        model_name=key.model_name,
        strategy=key.strategy,
        lr=key.lr,
        steps=strategy.job_steps(key.steps, ds, device, steps_given=params.steps is not None),
        seed=params.seed,
        resolution=params.resolution,
        batch_size=params.sweep_for(key.strategy, device).batch_size,
        options=strategy.job_options(params.options_for(key.strategy), selected_models=selected_models),
        augmentation=resolve_augmentation(params.augmentation, key.strategy, ds.extra),
        preprocessing=params.preprocessing,
    )
    result = run_finetune(run_spec, ds, cache=cache, device=device, progress=progress)
    requested = requested_strategy(params, key.strategy, device)
    if requested != key.strategy:
        result.hparams = {**result.hparams, "strategy_requested": requested}
    artifact_path = probs_path = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        result.artifact.save(run_dir / ARTIFACT_DIR)
        artifact_path = str(run_dir / ARTIFACT_DIR)
        probs_path = str(run_dir / PROBS_FILE)
        np.savez(probs_path, **probabilities(result))
    pass_key = backbone_key(
        key.model_name, key.strategy, resolution=params.resolution, preprocessing=params.preprocessing, run_key=str(key)
    )
    if strategy.joint:  # one pass per model it reads, each shared with that model's `linear` runs
        passes = [_embedder_cost(m, params, device) for m in run_spec.options["models"]]
        result.hparams = {**result.hparams, "passes": [{"key": k, **c.to_dict()} for k, c in passes]}
        total = ensemble_cost([0], {0: passes})
        cost = ForwardCost(gflops=total.gflops, params=total.params, latency_ms=total.latency_ms)
    else:
        cost = _pass_cost(
            pass_key,
            device,
            lambda: load_artifact_model(result.artifact, device=device),
            shared=strategy.shares_backbone,
        )
    y_test = ds.split("test").labels if result.test_proba is not None else None
    both = _held_out_rows([probabilities(result)], ds)
    fit_on = None if both is None else (both[0][0], both[1])
    record = RunRecord(
        calibration=calibrate(result.val_proba, ds.split("val").labels, result.test_proba, y_test, fit_on=fit_on),
        unit_key=str(key),
        **result.summary(),  # scores, seconds, updated parameters, hparams
        seed=params.seed,
        update_bytes=result.artifact.nbytes,
        artifact_path=artifact_path,
        probs_path=probs_path,
        gflops=cost.gflops,
        params_count=cost.params,
        latency_ms=cost.latency_ms,
        backbone_key=pass_key,
    )
    return record, result


def _held_out_rows(probs: Sequence[RunProbabilities], ds: ImageDataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Each run's held-out probabilities of train's rows and val's, stacked (runs, rows, classes), with the rows'
    labels, when every run has train's (`RunResult.train_proba`); None otherwise (val alone). The rows a run's
    temperature and the greedy ensemble are fitted on."""
    if not all("train" in p for p in probs):
        return None
    rows = np.stack([np.concatenate([p["train"], p["val"]]) for p in probs])
    return rows, np.concatenate([np.asarray(ds.split(s).labels) for s in ("train", "val")])


def probabilities(result: RunResult) -> RunProbabilities:
    """A run's probabilities by split, as it holds them in memory ("test" only with a test split, "train" only
    for a run with held-out probabilities of its training rows: `RunResult.train_proba`)."""
    out = {"val": result.val_proba}
    if result.test_proba is not None:
        out["test"] = result.test_proba
    if result.train_proba is not None:
        out["train"] = result.train_proba
    return out


def run_probabilities(run: RunRecord) -> RunProbabilities:
    """The probabilities a run saved (`finetune_run` with a `run_dir`)."""
    if run.probs_path is None:
        raise JobError(f"Run {run.unit_key} kept its probabilities in memory; nothing was saved to read back.")
    with np.load(run.probs_path) as saved:
        return {split: saved[split] for split in saved.files}


def _costs(runs: Sequence[RunRecord]) -> list[list[tuple[str, ForwardCost]]] | None:
    """The forward passes of each run, from its record: one (backbone key, forward cost), or one per model
    a `concat` probe reads (its hparams' `passes`, keyed as those models' `linear` runs). Passes of one key
    get the first one's cost (their latencies differ only by measurement noise). None when a run has no
    cost (recorded before costs were measured)."""
    out: list[list[tuple[str, ForwardCost]]] = []
    by_key: dict[str, ForwardCost] = {}
    for run in runs:
        if run.backbone_key is None or run.gflops is None or run.params_count is None:
            return None
        if run.hparams.get("passes"):
            passes = [(str(p["key"]), ForwardCost.from_dict(p)) for p in run.hparams["passes"]]
        else:
            passes = [
                (run.backbone_key, ForwardCost(gflops=run.gflops, params=run.params_count, latency_ms=run.latency_ms))
            ]
        out.append([(key, by_key.setdefault(key, cost)) for key, cost in passes])
    return out


LEAKY_VAL_CE = 1e-3
"""An ensemble's val cross-entropy under this is a warning: near-certain and right on every val image is
more often a leak (val images duplicated in train) or a trivially easy split than a real result."""


def ensemble_warnings(n_val: int, val_ce: float) -> list[str]:
    """Why the ensemble's val numbers may not be trusted: a small val split (`checks.small_val_warning`),
    a val cross-entropy under `LEAKY_VAL_CE`."""
    out = []
    small = small_val_warning(n_val)
    if small:
        out.append(small)
    if val_ce < LEAKY_VAL_CE:
        out.append(
            f"The ensemble's val cross-entropy is {val_ce:.2e}, under {LEAKY_VAL_CE:g}: the validation split may "
            "leak training images (duplicates) or be trivially easy; check it before trusting the scores and "
            "the calibration."
        )
    return out


def calibrate(
    P_val: np.ndarray,
    y_val: np.ndarray,
    P_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    fit_on: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Temperature scaling fitted on val (`ensemble.calibration.fit_temperature`, Guo et al. 2017), or on the
    held-out rows `fit_on` (probabilities, labels) when given, and what it gives: the temperature, the scaled
    probabilities' NLL, Brier score and ECE on val (and on test when given), the ECE before scaling on each split
    and the NLL before scaling on test. A run's `calibration` and the ensemble's metrics are both this."""
    val = np.asarray(P_val, dtype=np.float64)
    rows, labels = (val, y_val) if fit_on is None else (np.asarray(fit_on[0], dtype=np.float64), fit_on[1])
    temperature = fit_temperature(rows, labels)
    out: dict[str, Any] = {"temperature": temperature, "uncalibrated_val_ece": expected_calibration_error(val, y_val)}
    out.update(
        {f"val_{k}": v for k, v in calibration_metrics(apply_temperature(val, temperature), y_val).to_dict().items()}
    )
    if P_test is not None and y_test is not None:
        test = np.asarray(P_test, dtype=np.float64)
        scaled = apply_temperature(test, temperature)
        out.update({f"test_{k}": v for k, v in calibration_metrics(scaled, y_test).to_dict().items()})
        out["uncalibrated_test_nll"] = negative_log_likelihood(test, y_test)
        out["uncalibrated_test_ece"] = expected_calibration_error(test, y_test)
    return {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}


def _calibration(
    weights: np.ndarray,
    P_sel: np.ndarray,
    y_sel: np.ndarray,
    P_val: np.ndarray,
    y_val: np.ndarray,
    P_test: np.ndarray | None,
    y_test: np.ndarray | None,
) -> dict[str, Any]:
    """The ensemble's `calibrate` (its temperature, fitted on the selection rows `P_sel`: val, or train's held-out
    rows and val; its metrics on val and test), with its reliability diagram on test (val without a test split).
    The ensemble's probabilities are averaged in float64 here, as the greedy averaged them."""

    def mix(P: np.ndarray) -> np.ndarray:
        return np.tensordot(weights, P.astype(np.float64), axes=1)

    val = mix(P_val)
    test = None if P_test is None or y_test is None else mix(P_test)
    out = calibrate(val, y_val, test, y_test, fit_on=None if P_sel is P_val else (mix(P_sel), y_sel))
    if test is not None:
        out["reliability"] = reliability(apply_temperature(test, out["temperature"]), y_test, split="test")
    else:
        out["reliability"] = reliability(apply_temperature(val, out["temperature"]), y_val, split="val")
    return out


def select_ensemble(
    runs: Sequence[RunRecord], probs: Sequence[RunProbabilities], ds: ImageDataset, params: JobParams
) -> EnsembleRecord:
    """Greedy ensemble (with replacement) over the runs' val probabilities, in the order given (planning
    order: deterministic), within the job's budget, with its accuracy-against-cost front, then its
    temperature fitted on the selection rows and its calibration metrics (`_calibration`), and the job's warnings
    about its val numbers (`ensemble_warnings`).

    The selection rows: val's, and train's too when every candidate scored every training row held out
    (`RunResult.train_proba`: the cross-fitted probes of a CPU job, `LinearStrategy`'s `refit_folds`), so the
    greedy's choices and the temperature rest on train+val (1,000 rows in VTAB-1k) instead of val's 200. The
    record's val numbers (`val_ce`, `val_acc`, the calibration's `val_*`) are val's rows either way; its
    `loss_curve` and `front` are the selection rows'.

    The selection uses the uncalibrated probabilities: minimising the val cross-entropy of the averaged
    probabilities is Caruana et al.'s criterion, and temperature scaling afterwards changes no argmax
    (the accuracies are the same either way) while one T fitted per candidate ensemble inside the greedy
    loop would fit a parameter on the very split that chooses, for every step. So T is fitted once, on
    val, for the chosen ensemble, and predictions apply it.

    Costs come from the run records (`gflops`, `latency_ms`, `backbone_key`); a budget over runs
    recorded without costs is a JobError.
    """
    if not runs:
        raise JobError("No fine-tune run finished, so there is nothing to ensemble.")
    if len(probs) != len(runs):
        raise JobError(f"{len(runs)} runs but {len(probs)} sets of probabilities.")
    keys = [run.unit_key for run in runs]
    y_val = np.asarray(ds.split("val").labels)
    P_val = np.stack([p["val"] for p in probs])
    both = _held_out_rows(probs, ds)
    P_sel, y_sel = (P_val, y_val) if both is None else both  # the rows the greedy and the temperature are fitted on
    P_test = y_test = None
    if "test" in ds.splits and all("test" in p for p in probs):
        P_test, y_test = np.stack([p["test"] for p in probs]), ds.split("test").labels
    costs = _costs(runs)
    budget = params.budget
    if budget is not None and costs is None:
        raise JobError(
            "The runs of this job have no measured cost, so its budget cannot be applied; "
            "run the job again (`zooens jobs retry`)."
        )
    metric = budget[0] if budget else "gflops"
    selector = GreedyEnsembleSelector(
        max_size=params.ensemble_size,
        costs=None if costs is None else cost_vector(costs, metric),
        max_cost=budget[1] if budget else None,
    ).fit(P_sel, y_sel, P_test=P_test, y_test=y_test)
    val_proba = selector.predict_proba(P_val)
    val_ce = float(selector.val_loss_) if P_sel is P_val else mean_cross_entropy(val_proba, y_val)
    test_acc = None
    if P_test is not None:
        test_acc = float((selector.predict_proba(P_test).argmax(1) == y_test).mean())
    chosen = [int(i) for i in selector.selected_[: selector.best_size_]]
    spent = None if costs is None else ensemble_cost(chosen, dict(enumerate(costs)))
    front = None
    if costs is not None:

        def point(p: Any) -> dict[str, Any]:
            return {**p.to_dict(), "members": [keys[i] for i in p.members]}

        front = {
            "metric": metric,
            "budget": budget[1] if budget else None,
            "path": [point(p) for p in selector.path_],
            "front": [point(p) for p in selector.front_ or []],
            "complete": bool(selector.front_complete_),
        }
    return EnsembleRecord(
        members=[
            EnsembleMemberRecord(unit_key=keys[i], weight=float(w)) for i, w in enumerate(selector.weights_) if w > 0
        ],
        selected=[keys[i] for i in chosen],
        val_ce=val_ce,
        val_acc=float((val_proba.argmax(1) == y_val).mean()),
        test_acc=test_acc,
        size=int(selector.best_size_),
        loss_curve=[float(v) for v in selector.loss_curve_],
        max_gflops=params.max_gflops,
        max_latency_ms=params.max_latency_ms,
        gflops=None if spent is None else spent.gflops,
        latency_ms=None if spent is None else spent.latency_ms,
        front=front,
        **_calibration(np.asarray(selector.weights_, dtype=np.float64), P_sel, y_sel, P_val, y_val, P_test, y_test),
        warnings=ensemble_warnings(len(y_val), val_ce),
    )


def static_priors(models: Sequence[str]) -> dict[str, dict[str, float]]:
    """What a leaderboard says without looking at the data: each model's ImageNet top-1 (timm's published
    results) and its parameter count, as predictors for the audit (a larger value predicts better).
    A layer tap takes its model's top-1 (a leaderboard knows whole models only) and its own pruned
    network's parameters; a model without a published top-1 (a user model) is left out of that predictor."""
    top1: dict[str, float] = {}
    size: dict[str, float] = {}
    for name in models:
        try:
            facts = model_facts(name)
        except ZooensError:  # a user model removed since, a name this zoo no longer has: no prior
            logger.debug("no static prior for %r", name, exc_info=True)
            continue
        if facts.imagenet_top1 is not None:
            top1[name] = float(facts.imagenet_top1)
        if facts.num_params is not None:
            size[name] = float(facts.num_params)
    return {"imagenet_top1": top1, "num_params": size}


def audit_job_ranking(
    scores: Sequence[ScoreRecord], runs: Sequence[RunRecord], params: JobParams
) -> dict[str, Any] | None:
    """How well the kNN ranking and LogME, which look at the data, and the static priors, which do not
    (ImageNet top-1, parameter count: `static_priors`), predicted the fine-tuned order (`selection.audit`).

    The fine-tuned accuracy of a model is its best validation accuracy over its own runs (a `concat`
    probe, which reads several models, counts for none); with an audit
    (`audit_ranking` > 0) only `AUDIT_STRATEGY`'s runs count, which every audited model has, so the
    models are compared alike. None when no run finished.
    """
    runs = [r for r in runs if not get_strategy(r.strategy).joint]  # a joint probe is no one model's score
    if params.audit_ranking:
        runs = [r for r in runs if r.strategy == AUDIT_STRATEGY]
    if not runs:
        return None
    accuracy = best_accuracy_per_model([(r.model_name, r.val_acc) for r in runs])
    predictors = {
        "knn": {r.model_name: r.knn_accuracy for r in scores},
        "logme": {r.model_name: r.logme for r in scores if r.logme is not None},
        **static_priors(sorted(accuracy)),
    }
    audit = audit_ranking(accuracy, predictors, top_k=params.top_k).to_dict()
    basis = (
        f"best val accuracy of {AUDIT_STRATEGY} runs"
        if params.audit_ranking
        else "best val accuracy over each model's runs"
    )
    return {**audit, "basis": basis, "audited_models": len(accuracy)}
