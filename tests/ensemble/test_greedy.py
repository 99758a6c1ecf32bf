"""GreedyEnsembleSelector against an independent brute-force reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, log_loss

from zooens.ensemble.greedy import GreedyEnsembleSelector
from zooens.errors import ConfigError, DatasetError


def random_problem(seed: int, n_candidates: int = 4, n_samples: int = 30, n_classes: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_samples)
    P = rng.dirichlet(np.ones(n_classes) * 0.7, size=(n_candidates, n_samples))
    # make candidates informative to varying degrees
    for k in range(n_candidates):
        P[k, np.arange(n_samples), y] += rng.uniform(0, 1.5)
    P /= P.sum(-1, keepdims=True)
    return P, y


def ce(P: np.ndarray, members: tuple[int, ...], y: np.ndarray) -> float:
    """Independent reference: scikit-learn's log loss of the plain average of the members."""
    avg = np.mean([P[m].astype(np.float64) for m in members], axis=0)
    return log_loss(y, avg, labels=np.arange(P.shape[2]))


def reference_greedy(P: np.ndarray, y: np.ndarray, max_size: int) -> tuple[list[int], list[float]]:
    """The greedy path by enumeration: at each step, of all multisets extending the current
    prefix by one candidate, the one with the lowest loss (ties to chosen, then lowest index)."""
    chosen: list[int] = []
    curve: list[float] = []
    for _ in range(max_size):
        options = [(ce(P, tuple(chosen + [k]), y), k not in chosen, k) for k in range(len(P))]
        best_loss = min(o[0] for o in options)
        near = sorted((not_chosen, k) for loss, not_chosen, k in options if loss <= best_loss + 1e-12)
        chosen.append(near[0][1])
        curve.append(ce(P, tuple(chosen), y))
    return chosen, curve


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_on_small_cases(seed: int) -> None:
    P, y = random_problem(seed, n_candidates=3 + seed % 3)
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=3).fit(P, y)
    path, curve = reference_greedy(P, y, 3)
    assert sel.selected_ == path
    np.testing.assert_allclose(sel.loss_curve_, curve, rtol=1e-9)
    best = next(i for i, v in enumerate(curve) if v <= min(curve) + 1e-12) + 1  # shortest best prefix
    assert sel.best_size_ == best
    assert sel.val_loss_ == pytest.approx(min(curve), rel=1e-9)
    # the kept ensemble is the multiset of the prefix; its loss is what predict_proba gives
    assert sel.val_loss_ == pytest.approx(log_loss(y, sel.predict_proba(P), labels=[0, 1, 2]), rel=1e-5)
    # greedy never beats the exhaustive optimum over all multisets of size <= 3 (sanity)
    optimum = min(ce(P, m, y) for r in (1, 2, 3) for m in itertools.combinations_with_replacement(range(len(P)), r))
    assert sel.val_loss_ >= optimum - 1e-9
    singles = [ce(P, (k,), y) for k in range(len(P))]
    assert sel.selected_[0] == int(np.argmin(singles))


def test_prefers_members_already_chosen_on_ties() -> None:
    # one sample per class column; true-class probabilities: candidate 1 (0.5, 0.5) is the
    # best single; adding candidate 0 (0.9, d) ties with adding candidate 1 again when
    # (0.5 + 0.9)(0.5 + d) / 4 = 0.25.
    d = 1 / 1.4 - 0.5
    q = np.array([[0.9, d], [0.5, 0.5], [0.2, 0.2]])
    P = np.stack([q, 1 - q], axis=-1)  # (3 candidates, 2 samples, 2 classes), label 0 everywhere
    y = np.zeros(2, dtype=int)
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=2, tol=1e-9).fit(P, y)
    assert sel.selected_ == [1, 1]
    # without the tolerance the rounding decides, but never in favour of the worse candidate 2
    assert 2 not in GreedyEnsembleSelector(prefix_rule="min", max_size=2, tol=0.0).fit(P, y).selected_


def test_ties_between_new_candidates_go_to_the_lowest_index() -> None:
    P, y = random_problem(0, n_candidates=2)
    P3 = np.stack([P[1], P[0], P[1]])  # candidates 0 and 2 identical
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=5).fit(P3, y)
    assert 2 not in sel.selected_


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_candidates=st.integers(1, 6),
    n_samples=st.integers(1, 25),
    n_classes=st.integers(2, 5),
    max_size=st.integers(1, 8),
)
def test_never_worse_than_best_single_and_deterministic(seed, n_candidates, n_samples, n_classes, max_size) -> None:
    P, y = random_problem(seed, n_candidates, n_samples, n_classes)
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=max_size).fit(P, y)
    best_single = min(ce(P, (k,), y) for k in range(n_candidates))
    assert sel.val_loss_ <= best_single + 1e-9
    assert sel.weights_.shape == (n_candidates,)
    assert sel.weights_.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(sel.weights_ * sel.best_size_, np.round(sel.weights_ * sel.best_size_), atol=1e-9)
    assert len(sel.selected_) == max_size and len(sel.loss_curve_) == max_size
    assert 1 <= sel.best_size_ <= max_size
    np.testing.assert_array_equal(sel.classes_, np.arange(n_classes))
    again = GreedyEnsembleSelector(prefix_rule="min", max_size=max_size).fit(P.copy(), y.copy())
    assert again.selected_ == sel.selected_
    np.testing.assert_array_equal(again.loss_curve_, sel.loss_curve_)
    proba = sel.predict_proba(P)
    assert proba.shape == (n_samples, n_classes) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)


def test_weights_follow_the_kept_prefix() -> None:
    P, y = random_problem(3, n_candidates=5)
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=10).fit(P, y)
    counts = np.bincount(sel.selected_[: sel.best_size_], minlength=5)
    np.testing.assert_allclose(sel.weights_, counts / sel.best_size_)
    np.testing.assert_allclose(sel.predict_proba(P), np.tensordot(counts / counts.sum(), P, axes=1), atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"max_size": 0}, {"max_size": 2.5}, {"tol": -1.0}])
def test_bad_hyper_parameters(kwargs) -> None:
    P, y = random_problem(0)
    with pytest.raises(ConfigError):
        GreedyEnsembleSelector(**kwargs).fit(P, y)


def test_bad_inputs_and_unfitted_use() -> None:
    P, y = random_problem(0)
    with pytest.raises(DatasetError):
        GreedyEnsembleSelector(prefix_rule="min").fit(P[0], y)
    with pytest.raises(DatasetError):
        GreedyEnsembleSelector(prefix_rule="min").fit(P, y[:-1])
    with pytest.raises(DatasetError):
        GreedyEnsembleSelector(prefix_rule="min").fit(P, y + 5)
    with pytest.raises(ConfigError):
        GreedyEnsembleSelector(prefix_rule="min").predict_proba(P)
    sel = GreedyEnsembleSelector(prefix_rule="min").fit(P, y)
    with pytest.raises(DatasetError):
        sel.predict_proba(P[:2])


# --------------------------------------------------------------------------------------
# Under a cost budget, against brute force.


def random_costs(seed: int, n_candidates: int) -> list[tuple[str, float]]:
    """Backbone keys with repeats (runs sharing a frozen pass) and small integer costs, so that
    sums of distinct keys tie often (the hard case for budgets and tie-breaking)."""
    rng = np.random.default_rng(seed + 1000)
    n_keys = int(rng.integers(min(2, n_candidates), n_candidates + 1))
    key_cost = rng.integers(1, 7, n_keys).astype(float)
    keys = np.concatenate([np.arange(n_keys), rng.integers(0, n_keys, n_candidates - n_keys)])
    rng.shuffle(keys)
    return [(f"k{k}", float(key_cost[k])) for k in keys]


def ref_cost(costs: list[tuple[str, float]], members) -> float:
    """Independent reference: the sum of the costs of the distinct keys."""
    return float(sum({costs[m][0]: costs[m][1] for m in members}.values()))


def cached_ce(P: np.ndarray, y: np.ndarray):
    """`ce` of a multiset (order does not matter), each computed once."""
    seen: dict[tuple[int, ...], float] = {}

    def of(members) -> float:
        key = tuple(sorted(members))
        if key not in seen:
            seen[key] = ce(P, key, y)
        return seen[key]

    return of


def reference_budgeted_greedy(P, y, max_size, costs, budget, loss=None) -> list[int] | None:
    """The budgeted greedy path by enumeration: of the one-candidate extensions within budget, the
    lowest loss; ties (1e-12) to one already chosen, then the lowest added cost, then the lowest index."""
    loss = loss or cached_ce(P, y)
    chosen: list[int] = []
    for _ in range(max_size):
        options = [
            (loss(chosen + [k]), k not in chosen, ref_cost(costs, chosen + [k]), k)
            for k in range(len(P))
            if ref_cost(costs, chosen + [k]) <= budget
        ]
        if not options:
            return None
        best_loss = min(o[0] for o in options)
        chosen.append(min(o[1:] for o in options if o[0] <= best_loss + 1e-12)[2])
    return chosen


def budget_grid(costs: list[tuple[str, float]]) -> list[float]:
    """Every sum of distinct keys' costs, each midway point, and one below and above them all."""
    key_cost = sorted(dict(costs).values())
    sums = sorted({sum(c) for r in range(1, len(key_cost) + 1) for c in itertools.combinations(key_cost, r)})
    return sorted({min(sums) - 0.5, *sums, *((a + b) / 2 for a, b in zip(sums, sums[1:], strict=False)), max(sums) + 1})


@pytest.mark.parametrize("seed", range(10))
def test_budgeted_matches_brute_force(seed: int) -> None:
    n = 4 + seed % 2
    P, y = random_problem(seed, n_candidates=n)
    costs = random_costs(seed, n)
    loss = cached_ce(P, y)
    multisets = [m for r in (1, 2, 3) for m in itertools.combinations_with_replacement(range(n), r)]
    for budget in budget_grid(costs):
        singles = [loss((k,)) for k in range(n) if costs[k][1] <= budget]
        path = reference_budgeted_greedy(P, y, 3, costs, budget, loss)
        selector = GreedyEnsembleSelector(prefix_rule="min", max_size=3, costs=costs, max_cost=budget)
        if not singles:
            assert path is None
            with pytest.raises(ConfigError, match="No candidate fits the budget"):
                selector.fit(P, y)
            continue
        sel = selector.fit(P, y)
        assert sel.selected_ == path
        kept = sel.selected_[: sel.best_size_]
        assert sel.cost_ == ref_cost(costs, kept) <= budget
        assert all(costs[k][1] <= budget for k in sel.selected_)  # over budget alone: never used
        assert sel.val_loss_ == pytest.approx(ce(P, tuple(kept), y), rel=1e-9)
        assert sel.val_loss_ <= min(singles) + 1e-9  # never worse than the best single within budget
        optimum = min(loss(m) for m in multisets if ref_cost(costs, m) <= budget)
        assert sel.val_loss_ >= optimum - 1e-9
        again = GreedyEnsembleSelector(prefix_rule="min", max_size=3, costs=costs, max_cost=budget).fit(
            P.copy(), y.copy()
        )
        assert again.selected_ == sel.selected_ and again.cost_ == sel.cost_


@pytest.mark.parametrize("seed", range(8))
def test_front_over_budgets_against_brute_force(seed: int) -> None:
    n = 4 + seed % 2
    P, y = random_problem(seed, n_candidates=n)
    Pt, yt = random_problem(seed + 50, n_candidates=n, n_samples=40)
    costs = random_costs(seed, n)
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=3, costs=costs).fit(P, y, P_test=Pt, y_test=yt)
    levels = sel.budget_levels_
    assert sel.front_complete_ and levels
    assert [p.max_cost for p in levels] == sorted({p.max_cost for p in levels})
    # each point is what the selector gives under its budget
    for p in levels:
        under = GreedyEnsembleSelector(prefix_rule="min", max_size=3, costs=costs, max_cost=p.max_cost).fit(P, y)
        assert tuple(under.selected_[: under.best_size_]) == p.members
        assert under.cost_ == p.cost == ref_cost(costs, p.members) <= p.max_cost
        assert under.val_loss_ == p.val_loss
        avg = Pt[list(p.members)].mean(0)
        assert p.test_accuracy == pytest.approx(float(np.mean(avg.argmax(1) == yt)))
    # and the points cover every budget: the last level at or below it gives the greedy's result
    loss = cached_ce(P, y)
    for budget in budget_grid(costs):
        below = [p for p in levels if p.max_cost <= budget]
        path = reference_budgeted_greedy(P, y, 3, costs, budget, loss)
        if not below:
            assert path is None
            continue
        curve = [loss(path[: i + 1]) for i in range(3)]
        best = next(i for i, v in enumerate(curve) if v <= min(curve) + 1e-12) + 1
        assert below[-1].members == tuple(path[:best])
    # the front: non-dominated, and every level is matched or beaten by a front point
    front = sel.front_
    assert front and all(p in levels for p in front)
    for a in front:
        assert not any(
            b.cost <= a.cost and b.val_loss <= a.val_loss and (b.cost, b.val_loss) != (a.cost, a.val_loss)
            for b in levels
        )
    for p in levels:
        assert any(f.cost <= p.cost and f.val_loss <= p.val_loss for f in front)
    assert [p.cost for p in front] == sorted(p.cost for p in front)


def test_path_points_give_every_prefix() -> None:
    P, y = random_problem(4, n_candidates=5)
    Pt, yt = random_problem(5, n_candidates=5, n_samples=20)
    costs = random_costs(4, 5)
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=6, costs=costs).fit(P, y, P_test=Pt, y_test=yt)
    assert [p.members for p in sel.path_] == [tuple(sel.selected_[: i + 1]) for i in range(6)]
    for p in sel.path_:
        assert p.cost == ref_cost(costs, p.members) and p.max_cost is None
        assert p.val_loss == pytest.approx(ce(P, p.members, y), rel=1e-9)
        assert p.test_accuracy == pytest.approx(float(np.mean(Pt[list(p.members)].mean(0).argmax(1) == yt)))
        assert p.to_dict()["size"] == len(p.members)
    plain = GreedyEnsembleSelector(prefix_rule="min", max_size=6).fit(P, y)
    assert [p.cost for p in plain.path_] == [None] * 6 and plain.budget_levels_ is None and plain.front_ is None
    assert plain.cost_ is None and plain.path_[0].test_accuracy is None


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_candidates=st.integers(1, 6), max_size=st.integers(1, 6))
def test_costs_without_a_binding_budget_change_nothing(seed, n_candidates, max_size) -> None:
    # random problems have no exact ties, so the cheaper-first tie-break never acts
    P, y = random_problem(seed, n_candidates)
    costs = random_costs(seed, n_candidates)
    plain = GreedyEnsembleSelector(prefix_rule="min", max_size=max_size).fit(P, y)
    for max_cost in (None, ref_cost(costs, range(n_candidates))):
        sel = GreedyEnsembleSelector(prefix_rule="min", max_size=max_size, costs=costs, max_cost=max_cost).fit(P, y)
        assert sel.selected_ == plain.selected_ and sel.best_size_ == plain.best_size_
        np.testing.assert_array_equal(sel.loss_curve_, plain.loss_curve_)
        np.testing.assert_array_equal(sel.weights_, plain.weights_)
        assert sel.budget_levels_[-1].members == tuple(plain.selected_[: plain.best_size_])


def test_shared_pass_is_free_and_cheaper_wins_ties() -> None:
    # two samples of class 0; true-class probabilities: B (0.95, 0.3) is the best single, Q (0.3, 0.9)
    # complements it. Candidates 0 and 1 are both Q; 1 shares B's pass ("b"), so adding it is free.
    true = np.array([[0.3, 0.9], [0.3, 0.9], [0.95, 0.3]])
    P = np.stack([true, 1 - true], axis=-1)
    y = np.zeros(2, dtype=int)
    costs = [("a", 1.0), ("b", 2.0), ("b", 2.0)]
    assert GreedyEnsembleSelector(prefix_rule="min", max_size=2).fit(P, y).selected_ == [
        2,
        0,
    ]  # without costs: lowest index
    sel = GreedyEnsembleSelector(prefix_rule="min", max_size=2, costs=costs).fit(P, y)
    assert sel.selected_ == [2, 1] and sel.cost_ == 2.0  # with costs: the free one
    assert GreedyEnsembleSelector(prefix_rule="min", max_size=2, costs=costs, max_cost=2.0).fit(P, y).selected_ == [
        2,
        1,
    ]
    # identical new candidates: the cheaper wins although its index is higher
    cheap = GreedyEnsembleSelector(prefix_rule="min", max_size=1, costs=[("x", 2.0), ("y", 1.0)]).fit(P[[2, 2]], y)
    assert cheap.selected_ == [1] and cheap.cost_ == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_cost": 1.0}, "max_cost needs costs"),
        ({"costs": [("a", 1.0)]}, "one \\(backbone key, cost\\) per candidate"),
        ({"costs": [("a", 1.0), ("a", 2.0), ("b", 1.0), ("c", 1.0)]}, "two costs"),
        ({"costs": [("a", -1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0)]}, "non-negative cost"),
        ({"costs": [("a", 1.0), ("b", 1.0), (3, 1.0), ("d", 1.0)]}, "pair"),
        ({"costs": [("a", 1.0)] * 4, "max_cost": -1.0}, "max_cost must be"),
        ({"costs": [("a", 1.0)] * 4, "max_cost": float("inf")}, "max_cost must be"),
        ({"costs": [("a", 1.0), ("b", 3.0), ("c", 2.0), ("d", 5.0)], "max_cost": 0.5}, "at least that"),
    ],
)
def test_bad_budgets(kwargs, match) -> None:
    P, y = random_problem(0)
    with pytest.raises(ConfigError, match=match):
        GreedyEnsembleSelector(**kwargs).fit(P, y)


def test_bad_test_inputs() -> None:
    P, y = random_problem(0)
    with pytest.raises(DatasetError, match="both"):
        GreedyEnsembleSelector(prefix_rule="min").fit(P, y, P_test=P)
    with pytest.raises(DatasetError):
        GreedyEnsembleSelector(prefix_rule="min").fit(P, y, P_test=P[:2], y_test=y)
    with pytest.raises(DatasetError):
        GreedyEnsembleSelector(prefix_rule="min").fit(P, y, P_test=P, y_test=y[:-1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_candidates=st.integers(1, 7), max_size=st.integers(1, 5))
def test_budget_levels_are_exact_with_float_costs(seed, n_candidates, max_size) -> None:
    # at each level's max_cost the selector gives that point; just below it, the previous point
    P, y = random_problem(seed, n_candidates)
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, max(1, n_candidates - 1), n_candidates)
    key_cost = rng.uniform(0.05, 3.0, n_candidates)
    costs = [(f"k{k}", float(key_cost[k])) for k in keys]
    levels = GreedyEnsembleSelector(prefix_rule="min", max_size=max_size, costs=costs).fit(P, y).budget_levels_
    for i, p in enumerate(levels):
        at = GreedyEnsembleSelector(prefix_rule="min", max_size=max_size, costs=costs, max_cost=p.max_cost).fit(P, y)
        assert tuple(at.selected_[: at.best_size_]) == p.members
        below = GreedyEnsembleSelector(
            prefix_rule="min", max_size=max_size, costs=costs, max_cost=float(np.nextafter(p.max_cost, 0))
        )
        if i == 0:
            assert p.max_cost == min(c for _, c in costs)
            with pytest.raises(ConfigError):
                below.fit(P, y)
        else:
            below.fit(P, y)
            assert tuple(below.selected_[: below.best_size_]) == levels[i - 1].members


def _one_se_reference(P: np.ndarray, y: np.ndarray, path: list[int], guard: bool = False) -> int:
    """The one-standard-error rule by hand: per-example losses of every prefix, then the shortest prefix whose
    mean loss difference to the lowest prefix is at most that difference's standard error. With `guard`, only
    the prefixes whose averaged prediction (scikit-learn's accuracy_score) is at least as accurate as the first
    candidate's alone take part."""
    n = len(y)
    per = [
        [-math.log(max(float(np.mean([P[k][i][y[i]] for k in path[:m]])), 1e-12)) for i in range(n)]
        for m in range(1, len(path) + 1)
    ]
    accuracy = [accuracy_score(y, np.mean([P[k] for k in path[:m]], axis=0).argmax(1)) for m in range(1, len(path) + 1)]
    ok = [not guard or a >= accuracy[0] for a in accuracy]
    means = [sum(row) / n for row in per]
    lowest = min(v for v, good in zip(means, ok, strict=True) if good)
    best = min((m for m in range(len(means)) if ok[m]), key=lambda m: (means[m] - 1e-12 > lowest, m))
    for m in range(best + 1):
        if not ok[m]:
            continue
        d = [a - b for a, b in zip(per[m], per[best], strict=True)]
        mean_d = sum(d) / n
        se = math.sqrt(sum((v - mean_d) ** 2 for v in d) / (n - 1)) / math.sqrt(n)
        if mean_d <= se + 1e-12:
            return m + 1
    return best + 1


@pytest.mark.parametrize("seed", range(12))
def test_one_se_keeps_the_shortest_prefix_within_one_standard_error(seed: int) -> None:
    P, y = random_problem(seed, n_candidates=3 + seed % 3, n_samples=15 + seed)
    sel = GreedyEnsembleSelector(max_size=6, prefix_rule="one_se", accuracy_guard=False).fit(P, y)
    minimal = GreedyEnsembleSelector(max_size=6, prefix_rule="min", accuracy_guard=False).fit(P, y)
    assert sel.selected_ == minimal.selected_  # the same path; only the kept prefix differs
    assert sel.best_size_ == _one_se_reference(P, y, sel.selected_) <= minimal.best_size_
    assert sel.val_loss_ == pytest.approx(ce(P, tuple(sel.selected_[: sel.best_size_]), y), rel=1e-9)
    assert sel.val_loss_ <= min(ce(P, (k,), y) for k in range(len(P))) + 1e-9  # never worse than the best single


def test_a_clear_gain_is_kept_and_noise_is_not() -> None:
    rng = np.random.default_rng(0)
    n, k = 400, 3
    y = rng.integers(0, k, n)

    def confident(right: np.ndarray) -> np.ndarray:  # 0.9 on the label where right, on another class elsewhere
        top = np.where(right, y, (y + 1) % k)
        return 0.05 + 0.85 * np.eye(k)[top]

    a = confident(rng.random(n) < 0.7)
    b = confident(rng.random(n) < 0.7)  # as good, its errors independent of a's: averaging helps a lot
    for rule in ("min", "one_se"):
        assert GreedyEnsembleSelector(max_size=4, prefix_rule=rule).fit(np.stack([a, b]), y).best_size_ > 1
    twin = np.clip(a + rng.normal(0, 1e-4, a.shape), 1e-6, None)
    twin /= twin.sum(1, keepdims=True)  # a copy of a up to noise: nothing to gain
    assert GreedyEnsembleSelector(max_size=4, prefix_rule="one_se").fit(np.stack([a, twin]), y).best_size_ == 1
    with pytest.raises(ConfigError, match="prefix_rule"):
        GreedyEnsembleSelector(prefix_rule="max").fit(np.stack([a, b]), y)


@pytest.mark.parametrize("seed", range(40))
def test_the_accuracy_guard_keeps_no_prefix_less_accurate_than_the_best_single(seed: int) -> None:
    """Against the by-hand rule restricted to the prefixes at least as accurate on val as the first pick, for both
    prefix rules; the guard never changes the path, and where it binds the unguarded choice was less accurate."""
    P, y = random_problem(seed, n_candidates=3 + seed % 4, n_samples=12 + seed % 7, n_classes=2 + seed % 3)
    guarded = GreedyEnsembleSelector(max_size=6, prefix_rule="one_se").fit(P, y)
    free = GreedyEnsembleSelector(max_size=6, prefix_rule="one_se", accuracy_guard=False).fit(P, y)
    assert guarded.selected_ == free.selected_
    assert guarded.best_size_ == _one_se_reference(P, y, guarded.selected_, guard=True)
    first = accuracy_score(y, P[guarded.selected_[0]].argmax(1))
    assert accuracy_score(y, guarded.predict_proba(P).argmax(1)) >= first
    if guarded.best_size_ != free.best_size_:
        assert accuracy_score(y, free.predict_proba(P).argmax(1)) < first
    for rule in (None, "min", "one_se"):  # the lowest-CE eligible prefix, by enumeration (None: the default, min)
        sel = GreedyEnsembleSelector(max_size=6, **({} if rule is None else {"prefix_rule": rule})).fit(P, y)
        prefixes = [tuple(sel.selected_[:m]) for m in range(1, 7)]
        ok = [m for m in prefixes if accuracy_score(y, np.mean([P[k] for k in m], axis=0).argmax(1)) >= first]
        lowest = min(ce(P, m, y) for m in ok)
        if rule != "one_se":
            assert sel.best_size_ == min(len(m) for m in ok if ce(P, m, y) <= lowest + 1e-9)
        assert sel.val_loss_ >= lowest - 1e-9


def test_the_accuracy_guard_refuses_a_pair_that_buys_confidence_with_decisions() -> None:
    """The first pick is right on 6 of 8 (twice only just, twice badly wrong); the other is as often right but
    confidently wrong where the first was only just right. Their average has the lower CE (it softens the first's
    bad errors) but gets two more examples wrong: unguarded (Caruana et al.) the pair is kept, guarded it is not."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])

    def right(p: list[float]) -> np.ndarray:  # the probability of the true class per example, two classes
        out = np.empty((8, 2))
        out[np.arange(8), y], out[np.arange(8), 1 - y] = p, 1 - np.asarray(p)
        return out

    P = np.stack([right([0.9, 0.9, 0.6, 0.6, 0.9, 0.9, 0.2, 0.2]), right([0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.7, 0.7])])
    assert ce(P, (0, 1), y) < ce(P, (0,), y) < ce(P, (1,), y)
    assert accuracy_score(y, P.mean(0).argmax(1)) == 0.5 < accuracy_score(y, P[0].argmax(1)) == 0.75
    free = GreedyEnsembleSelector(max_size=2, prefix_rule="min", accuracy_guard=False).fit(P, y)
    guarded = GreedyEnsembleSelector(max_size=2, prefix_rule="min").fit(P, y)
    assert free.best_size_ == 2 and guarded.best_size_ == 1 and guarded.selected_ == free.selected_
    with pytest.raises(ConfigError, match="accuracy_guard"):
        GreedyEnsembleSelector(accuracy_guard="yes").fit(P, y)
