"""The hyper-parameter checks and the strategies' option hooks (no zoo, no data)."""

from __future__ import annotations

import pytest

from zooens.ensemble import (
    check_batch_size,
    check_learning_rate,
    check_resolution,
    check_seed,
    check_steps,
    get_strategy,
    strategy_names,
)
from zooens.ensemble.specs import MAX_STEPS
from zooens.errors import ConfigError


def test_checks_return_canonical_values_and_refuse_bad_ones() -> None:
    assert check_learning_rate(1) == 1.0 and isinstance(check_learning_rate(1), float)
    assert check_steps(3.0) == 3 and check_batch_size(8) == 8 and check_seed(0) == 0
    assert check_resolution(None) is None and check_resolution(16) == 16 and check_resolution(1024) == 1024
    for check, bad, match in [
        (check_learning_rate, 0.0, "lr must be a positive number"),
        (check_learning_rate, float("inf"), "lr must be a positive number"),
        (check_steps, 0, "steps must be at least 1"),
        (check_steps, 2.5, "steps must be an integer"),
        (check_batch_size, 0, "batch_size must be at least 1"),
        (check_seed, -1, "seed must be a non-negative integer"),
        (check_resolution, 15, "between 16 and 1024"),
        (check_resolution, 1025, "between 16 and 1024"),
    ]:
        with pytest.raises(ConfigError, match=match):
            check(bad)


def test_steps_are_bounded_per_run() -> None:
    """A job's unit must end in bounded time: one run asks for at most MAX_STEPS steps."""
    assert check_steps(MAX_STEPS) == MAX_STEPS == 100_000
    with pytest.raises(ConfigError, match=r"at most 100,000 per run, got 1000000000; this is the step count"):
        check_steps(1_000_000_000)


def test_every_strategy_is_registered() -> None:
    assert strategy_names() == ["aft", "auto", "concat", "film", "full", "kron", "linear", "lora", "patch"]


@pytest.mark.parametrize(
    "name, good, bad",
    [
        ("linear", {"solver": "sgd", "momentum": 0.9}, {"augment": True}),
        ("linear", {"c_grid": [0.1, 1.0]}, {"momentum": 0.9}),
        ("full", {"momentum": 0.9, "weight_decay": 0.0}, {"rank": 2}),
        ("patch", {"depthwise": True, "momentum": 0.9}, {"rank": 2}),
        ("lora", {"rank": 2}, {"rank": 0}),
        ("film", {"head": "lda"}, {"head": "svm"}),
        ("kron", {"n_kron": 2}, {"a_size": 0}),
        ("aft", {"beta": 0.5}, {"beta": -1.0}),
        ("aft", {"teachers": ["a"]}, {"teachers": "a"}),
        ("aft", {}, {"rank": 2}),
    ],
)
def test_check_options(name, good, bad) -> None:
    strategy = get_strategy(name)
    strategy.check_options(good)
    with pytest.raises(ConfigError):
        strategy.check_options(bad)


def test_job_options_fill_aft_teachers_only_when_none_are_given() -> None:
    aft = get_strategy("aft")
    assert aft.job_options({"beta": 2.0}, selected_models=["a", "b"]) == {"beta": 2.0, "teachers": ["a", "b"]}
    assert aft.job_options({"teachers": ["c"]}, selected_models=["a"]) == {"teachers": ["c"]}
    options = {"momentum": 0.5}
    assert get_strategy("linear").job_options(options, selected_models=["a"]) == options
