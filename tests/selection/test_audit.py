"""The ranking audit: correlations against scipy, regret by hand, undefined cases as NaN with a reason."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from zooens.errors import ConfigError, DatasetError
from zooens.selection.audit import (
    audit_ranking,
    best_accuracy_per_model,
    kendall_tau_b,
    rank_average,
    spearman_rho,
)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 15), levels=st.integers(2, 6))
def test_correlations_match_scipy_with_ties(seed: int, n: int, levels: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, n).astype(float)  # few levels: many ties
    y = rng.integers(0, levels, n).astype(float) + 0.5 * x
    rho, tau = spearman_rho(x, y), kendall_tau_b(x, y)
    if np.all(x == x[0]) or np.all(y == y[0]):
        assert math.isnan(rho.value) and math.isnan(tau.value) and "same for every model" in rho.reason
        return
    assert rho.reason is None and tau.reason is None
    assert rho.value == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert tau.value == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)  # tau-b


def test_ranks_and_perfect_orders() -> None:
    np.testing.assert_array_equal(rank_average([3.0, 1.0, 3.0, 2.0]), stats.rankdata([3.0, 1.0, 3.0, 2.0]))
    x = np.array([0.1, 0.5, 0.3, 0.9])
    assert spearman_rho(x, 2 * x + 1).value == pytest.approx(1.0)
    assert kendall_tau_b(x, -x).value == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "x, y, reason",
    [
        ([], [], "only 0 model"),
        ([0.4], [0.8], "only 1 model"),
        ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], "predictor is the same"),
        ([0.1, 0.2, 0.3], [0.7, 0.7, 0.7], "fine-tuned accuracy is the same"),
    ],
)
def test_undefined_correlations_are_nan_with_a_reason(x, y, reason) -> None:
    for corr in (spearman_rho(x, y), kendall_tau_b(x, y)):
        assert math.isnan(corr.value) and reason in corr.reason
        assert corr.to_dict() == {"value": None, "reason": corr.reason}


def test_bad_correlation_inputs() -> None:
    with pytest.raises(DatasetError):
        spearman_rho([1.0, 2.0], [1.0])
    with pytest.raises(DatasetError):
        kendall_tau_b([1.0, float("nan")], [1.0, 2.0])


def test_audit_by_hand() -> None:
    acc = best_accuracy_per_model([("a", 0.70), ("b", 0.80), ("a", 0.75), ("c", 0.90), ("d", 0.60)])
    assert acc == {"a": 0.75, "b": 0.80, "c": 0.90, "d": 0.60}
    scores = {
        "knn": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1},  # puts the best model (c) third
        "logme": {"a": 1.0, "b": 2.0, "c": 3.0, "d": None},  # right order; no score for d
    }
    audit = audit_ranking(acc, scores, top_k=2)
    knn, logme = audit.predictors["knn"], audit.predictors["logme"]
    assert knn.models == ("a", "b", "c", "d") and knn.top_k_models == ("a", "b")
    assert knn.best_in_top_k == 0.80 and knn.best_overall == 0.90 and knn.regret == pytest.approx(0.10)
    assert knn.spearman.value == pytest.approx(stats.spearmanr([0.9, 0.8, 0.7, 0.1], [0.75, 0.8, 0.9, 0.6]).statistic)
    assert knn.kendall.value == pytest.approx(stats.kendalltau([0.9, 0.8, 0.7, 0.1], [0.75, 0.8, 0.9, 0.6]).statistic)
    assert logme.n == 3 and logme.models == ("c", "b", "a") and logme.regret == 0.0
    assert logme.spearman.value == pytest.approx(1.0) and logme.kendall.value == pytest.approx(1.0)
    assert audit.skipped == {"logme": ("d",)}
    assert audit_ranking(acc, scores, top_k=10).predictors["knn"].regret == 0.0
    json.dumps(audit.to_dict(), allow_nan=False)


def test_ties_in_the_predictor_go_by_name_and_degenerate_audits_do_not_crash() -> None:
    audit = audit_ranking({"b": 0.9, "a": 0.5}, {"knn": {"a": 0.7, "b": 0.7}}, top_k=1)
    knn = audit.predictors["knn"]
    assert knn.top_k_models == ("a",) and knn.regret == pytest.approx(0.4)
    assert math.isnan(knn.spearman.value) and "predictor is the same" in knn.spearman.reason
    single = audit_ranking({"a": 0.5}, {"knn": {"a": 0.1}}, top_k=3).predictors["knn"]
    assert single.regret == 0.0 and math.isnan(single.kendall.value) and "only 1 model" in single.kendall.reason
    empty = audit_ranking({"a": 0.5}, {"logme": {"a": float("nan")}}, top_k=3)
    none = empty.predictors["logme"]
    assert none.n == 0 and math.isnan(none.regret) and none.regret_reason and empty.skipped == {"logme": ("a",)}
    d = empty.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["predictors"]["logme"]["regret"] is None
    assert audit_ranking({}, {"knn": {}}, top_k=1).predictors["knn"].n == 0


def test_bad_audit_inputs() -> None:
    with pytest.raises(ConfigError):
        audit_ranking({"a": 0.5}, {"knn": {"a": 0.1}}, top_k=0)
    with pytest.raises(DatasetError):
        audit_ranking({"a": float("nan")}, {"knn": {"a": 0.1}}, top_k=1)
    with pytest.raises(DatasetError):
        best_accuracy_per_model([("a", None)])
