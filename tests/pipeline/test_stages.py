"""The pipeline's stages on plain records, checked against independent references: a brute-force greedy
ensemble (Caruana et al. 2004, with replacement), the budget's distinct-pass cost, best runs by val CE,
scipy's rank correlations for the audit."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from scipy.stats import kendalltau, spearmanr

import zooens.zoo
from zooens.errors import JobError
from zooens.pipeline import JobParams, RunRecord, ScoreRecord, audit_job_ranking, ranking_table, select_ensemble
from zooens.selection.datasets import ImageDataset, Split

N_CLASSES = 3


def _dataset(y_val: np.ndarray, y_test: np.ndarray | None = None) -> ImageDataset:
    def split(name, y):
        return Split(name, np.zeros((len(y), 4, 4), np.uint8), y)

    splits = {"train": split("train", np.arange(6) % N_CLASSES), "val": split("val", y_val)}
    if y_test is not None:
        splits["test"] = split("test", y_test)
    return ImageDataset("toy", [str(c) for c in range(N_CLASSES)], splits)


def _run(i: int, *, model: str | None = None, backbone: str | None = None, gflops: float | None = 1.0, **over):
    fields = dict(
        unit_key=f"finetune:m{i}:linear:lr=0.1:steps={i + 1}",
        model_name=model or f"m{i}",
        strategy="linear",
        hparams={},
        val_ce=1.0,
        val_acc=0.5,
        seconds=1.0,
        updated_params=1,
        update_bytes=4,
        gflops=gflops,
        params_count=None if gflops is None else 10,
        latency_ms=None if gflops is None else 2.0,
        backbone_key=None if gflops is None else (backbone or f"m{i}"),
    )
    return RunRecord(**{**fields, **over})


def _probs(rng: np.random.Generator, n_runs: int, n: int) -> np.ndarray:
    logits = rng.normal(size=(n_runs, n, N_CLASSES)) * 2
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _greedy_reference(P: np.ndarray, y: np.ndarray, max_size: int) -> tuple[list[int], float]:
    """Caruana's greedy with replacement by brute force; the kept prefix the shortest with the lowest cross-entropy
    (Caruana et al.'s and Mustafa et al.'s rule) among the prefixes at least as accurate on val as the first pick
    (the accuracy guard)."""
    rows = np.arange(len(y))
    chosen: list[int] = []
    for _ in range(max_size):
        losses = [-np.mean(np.log(np.clip(P[chosen + [j]].mean(0)[rows, y], 1e-12, None))) for j in range(len(P))]
        chosen.append(int(np.argmin(losses)))
    prefixes = [P[chosen[:m]].mean(0) for m in range(1, max_size + 1)]
    per = [-np.log(np.clip(p[rows, y], 1e-12, None)) for p in prefixes]
    ok = [int((p.argmax(1) == y).sum()) >= int((prefixes[0].argmax(1) == y).sum()) for p in prefixes]
    lowest = min(row.mean() for row, good in zip(per, ok, strict=True) if good)
    best = next(m for m in range(max_size) if ok[m] and per[m].mean() <= lowest + 1e-12)
    return chosen[: best + 1], float(per[best].mean())


def test_select_ensemble_is_the_greedy_with_replacement():
    rng = np.random.default_rng(0)
    y_val, y_test = rng.integers(0, N_CLASSES, 60), rng.integers(0, N_CLASSES, 40)
    P_val, P_test = _probs(rng, 5, 60), _probs(rng, 5, 40)
    runs = [_run(i) for i in range(5)]
    probs = [{"val": P_val[i], "test": P_test[i]} for i in range(5)]
    record = select_ensemble(runs, probs, _dataset(y_val, y_test), JobParams(ensemble_size=6))
    chosen, loss = _greedy_reference(P_val, y_val, 6)
    assert record.selected == [runs[i].unit_key for i in chosen]
    assert record.val_ce == pytest.approx(loss) and record.size == len(chosen)
    counts = {runs[i].unit_key: chosen.count(i) / len(chosen) for i in set(chosen)}
    assert {m.unit_key: m.weight for m in record.members} == pytest.approx(counts)
    mix = P_test[chosen].mean(0)
    assert record.test_acc == pytest.approx(float((mix.argmax(1) == y_test).mean()))
    assert record.gflops == pytest.approx(len(set(chosen)))  # one GFLOP per distinct pass
    assert record.front is not None and record.front["metric"] == "gflops"


def test_held_out_training_rows_join_val_in_the_selection_and_the_temperature():
    """When every candidate scored the training rows held out (cross-fitted probes: `RunResult.train_proba`), the
    greedy and the ensemble's temperature are fitted on train's rows and val's together; the val numbers stay
    val's. When one candidate lacks them, val alone, as before."""
    from zooens.ensemble.calibration import fit_temperature

    rng = np.random.default_rng(3)
    y_val, y_test = rng.integers(0, N_CLASSES, 40), rng.integers(0, N_CLASSES, 30)
    y_train = np.arange(6) % N_CLASSES  # `_dataset`'s training labels
    P_train, P_val, P_test = _probs(rng, 4, 6), _probs(rng, 4, 40), _probs(rng, 4, 30)
    runs = [_run(i) for i in range(4)]
    probs = [{"train": P_train[i], "val": P_val[i], "test": P_test[i]} for i in range(4)]
    ds = _dataset(y_val, y_test)
    record = select_ensemble(runs, probs, ds, JobParams(ensemble_size=5))
    P_sel, y_sel = np.concatenate([P_train, P_val], axis=1), np.concatenate([y_train, y_val])
    chosen, _ = _greedy_reference(P_sel, y_sel, 5)
    assert record.selected == [runs[i].unit_key for i in chosen]
    assert chosen != _greedy_reference(P_val, y_val, 5)[0]  # the training rows changed the choice
    mix_val = P_val[chosen].mean(0)
    ce = -np.mean(np.log(mix_val[np.arange(len(y_val)), y_val]))
    assert record.val_ce == pytest.approx(ce) and record.val_acc == pytest.approx((mix_val.argmax(1) == y_val).mean())
    assert record.temperature == pytest.approx(fit_temperature(P_sel[chosen].mean(0), y_sel), rel=1e-6)
    # one candidate without training rows: val alone
    partial = [*probs[:3], {"val": P_val[3], "test": P_test[3]}]
    alone = select_ensemble(runs, partial, ds, JobParams(ensemble_size=5))
    assert alone.selected == [runs[i].unit_key for i in _greedy_reference(P_val, y_val, 5)[0]]


def test_the_budget_counts_each_shared_pass_once_from_the_run_records():
    rng = np.random.default_rng(1)
    y_val = rng.integers(0, N_CLASSES, 50)
    P_val = _probs(rng, 4, 50)
    # runs 0 and 1 share one frozen backbone (one pass of 3 GFLOPs); 2 and 3 are 2 GFLOPs each
    runs = [_run(0, backbone="shared", gflops=3.0), _run(1, backbone="shared", gflops=3.0)]
    runs += [_run(2, gflops=2.0), _run(3, gflops=2.0)]
    probs = [{"val": p} for p in P_val]
    for budget in (2.0, 3.0, 4.0, 5.0, 7.0):
        record = select_ensemble(runs, probs, _dataset(y_val), JobParams(max_gflops=budget, ensemble_size=8))
        passes = {runs[[r.unit_key for r in runs].index(k)].backbone_key for k in record.selected}
        spent = sum(3.0 if p == "shared" else 2.0 for p in passes)
        assert record.gflops == pytest.approx(spent) and spent <= budget + 1e-9
        assert record.max_gflops == budget and record.test_acc is None
    unmeasured = [_run(i, gflops=None) for i in range(2)]
    with pytest.raises(JobError, match="no measured cost"):
        select_ensemble(unmeasured, probs[:2], _dataset(y_val), JobParams(max_gflops=1.0))
    assert select_ensemble(unmeasured, probs[:2], _dataset(y_val), JobParams()).front is None
    with pytest.raises(JobError, match="nothing to ensemble"):
        select_ensemble([], [], _dataset(y_val), JobParams())


def test_ranking_table_keeps_the_order_and_each_models_best_run():
    scores = [ScoreRecord(model_name=m, knn_accuracy=a) for m, a in (("b", 0.9), ("a", 0.8), ("c", 0.1))]
    runs = [
        _run(0, model="a", val_ce=0.5, val_acc=0.7, update_bytes=40),
        _run(1, model="a", val_ce=0.4, val_acc=0.6, update_bytes=80),
        _run(2, model="b", val_ce=0.9, val_acc=0.9),
        _run(3, model="b", val_ce=0.9, val_acc=0.1),  # a tie: the earlier run stays
    ]
    rows = ranking_table(scores, runs)
    assert [(r.rank, r.model_name) for r in rows] == [(1, "b"), (2, "a"), (3, "c")]
    assert (rows[1].finetuned_val_ce, rows[1].update_bytes) == (0.4, 80)
    assert rows[0].finetuned_val_acc == 0.9 and rows[2].best_strategy is None and rows[2].update_bytes is None


def test_the_audit_compares_the_ranking_with_the_fine_tuned_order():
    rng = np.random.default_rng(3)
    names = [f"m{i}" for i in range(6)]
    knn = dict(zip(names, rng.random(6), strict=True))
    acc = dict(zip(names, rng.random(6), strict=True))
    scores = [ScoreRecord(model_name=m, knn_accuracy=knn[m], logme=-knn[m]) for m in names]
    runs = [_run(i, model=m, val_acc=acc[m], strategy="linear") for i, m in enumerate(names)]
    runs.append(_run(9, model="m0", val_acc=1.0, strategy="full"))  # not counted with an audit
    audit = audit_job_ranking(scores, runs, JobParams(audit_ranking=3, top_k=2))
    x, y = [knn[m] for m in names], [acc[m] for m in names]
    knn_audit, logme_audit = audit["predictors"]["knn"], audit["predictors"]["logme"]
    assert knn_audit["spearman"]["value"] == pytest.approx(spearmanr(x, y).statistic)
    assert knn_audit["kendall"]["value"] == pytest.approx(kendalltau(x, y).statistic)
    assert logme_audit["spearman"]["value"] == pytest.approx(-spearmanr(x, y).statistic)
    best_two = sorted(names, key=lambda m: -knn[m])[:2]
    assert knn_audit["regret"] == pytest.approx(max(acc.values()) - max(acc[m] for m in best_two))
    assert audit["audited_models"] == 6 and audit["basis"] == "best val accuracy of linear runs"
    without = audit_job_ranking(scores, runs, JobParams(top_k=2))
    assert without["basis"] == "best val accuracy over each model's runs"
    assert audit_job_ranking(scores, [], JobParams()) is None


def _published_top1() -> dict[str, float]:
    """timm's published ImageNet top-1 read straight from the shipped file (at each model's first listed size)."""
    text = (Path(zooens.zoo.__file__).parent / "data" / "imagenet_top1.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    out: dict[str, float] = {}
    for row in rows:
        out.setdefault(row["model"], float(row["top1"]))
    return out


def test_the_audit_scores_the_static_priors_beside_the_data_driven_predictors():
    """ImageNet top-1 and parameter count predict the fine-tuned order without looking at the data: their figures
    are scipy's rank correlations of the published top-1 and of the parameters counted here on the meta device."""
    names = [
        "resnet18.a1_in1k",
        "resnet50.a1_in1k",
        "vit_small_patch16_224.augreg_in1k",
        "convnext_tiny.fb_in1k",
        "efficientnet_b0.ra_in1k",
    ]
    acc = dict(zip(names, [0.61, 0.70, 0.66, 0.72, 0.64], strict=True))
    scores = [ScoreRecord(model_name=m, knn_accuracy=acc[m] - 0.1) for m in names]
    runs = [_run(i, model=m, val_acc=acc[m]) for i, m in enumerate(names)]
    audit = audit_job_ranking(scores, runs, JobParams(top_k=1))
    top1 = _published_top1()
    with torch.device("meta"):
        size = {
            m: sum(p.numel() for p in timm.create_model(m.split(".")[0], num_classes=0).parameters()) for m in names
        }
    y = [acc[m] for m in names]
    prior = audit["predictors"]["imagenet_top1"]
    assert prior["n"] == 5
    assert prior["spearman"]["value"] == pytest.approx(spearmanr([top1[m] for m in names], y).statistic)
    assert prior["kendall"]["value"] == pytest.approx(kendalltau([top1[m] for m in names], y).statistic)
    by_size = audit["predictors"]["num_params"]
    assert by_size["spearman"]["value"] == pytest.approx(spearmanr([size[m] for m in names], y).statistic)
    assert by_size["top_k_models"] == [max(names, key=lambda m: size[m])]
    assert audit["predictors"]["knn"]["spearman"]["value"] == pytest.approx(1.0)
    # a model the zoo does not know has no prior: left out of the priors' audits, kept in kNN's
    odd = audit_job_ranking(
        [*scores, ScoreRecord(model_name="gone", knn_accuracy=0.1)], [*runs, _run(7, model="gone")], JobParams()
    )
    assert odd["predictors"]["knn"]["n"] == 6 and odd["predictors"]["imagenet_top1"]["n"] == 5
    assert "gone" in odd["skipped"]["imagenet_top1"]
