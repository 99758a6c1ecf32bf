"""What can be known at submission is refused at submission (issue 26, failures 2 and 9): bounded
values, options only for the strategies a job runs, split sizes the data can serve, strategies the
job's top-K can serve, and a GFLOPs budget the zoo's cheapest model fits, counted before any weights
are read."""

from __future__ import annotations

import logging

import pytest

from zooens.ensemble.cost import count_flops
from zooens.errors import ConfigError
from zooens.pipeline import JobParams, job_zoo, parse_params
from zooens.pipeline.checks import check_counts, check_job, job_resolutions, least_gflops
from zooens.pipeline.plan import AUDIT_STRATEGY
from zooens.zoo import create_model, get_weight_set, resolve_zoo

CHEAPEST = "tf_efficientnet_lite0.in1k"


# -- values: bounded when the parameters are built -----------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"learning_rates": [1e300]}, "lr must be a positive number at most 10 (learning rates lie in (0, 10])"),
        ({"learning_rates": [0.01, 10.5]}, "at most 10"),
        (
            {"strategies": ["lora"], "strategy_options": {"lora": {"rank": 10**9}}},
            "LoRA rank must be an integer from 1",
        ),
        (
            {"strategies": ["kron"], "strategy_options": {"kron": {"rank": 10**9}}},
            "kron rank must be an integer from 1",
        ),
        ({"strategies": ["aft"], "strategy_options": {"aft": {"scale_lr": 1e300}}}, "scale_lr must be at most 10"),
        ({"strategies": ["patch"], "strategy_options": {"patch": {"momentum": 5}}}, "patch.momentum must be in [0, 1)"),
        ({"strategies": ["full"], "strategy_options": {"full": {"weight_decay": 1e300}}}, "full.weight_decay"),
        ({"strategies": ["lora"], "strategy_options": {"lora": {"eval_batch_size": 10**9}}}, "eval_batch_size"),
        ({"n_train": 1_000_001}, "n_train"),
    ],
    ids=[
        "lr-1e300",
        "lr-above-10",
        "lora-rank",
        "kron-rank",
        "aft-scale-lr",
        "momentum",
        "weight-decay",
        "eval-batch",
        "n-train",
    ],
)
def test_values_beyond_their_bounds_are_refused_with_the_range(fields, message):
    with pytest.raises(ConfigError) as caught:
        parse_params(**fields)
    assert message in str(caught.value), caught.value


def test_values_at_their_bounds_are_accepted_and_recorded_as_given():
    params = parse_params(
        learning_rates=[10.0, 1e-6],
        strategies=["lora", "aft"],
        strategy_options={"lora": {"rank": 1024, "momentum": 0.9}, "aft": {"scale_lr": 10.0}},
        n_train=1_000_000,
    )
    assert params.learning_rates == [10.0, 1e-6] and params.options_for("lora")["rank"] == 1024
    assert JobParams.model_validate(params.model_dump()) == params


def test_options_for_a_strategy_the_job_does_not_run_are_refused_naming_its_strategies():
    with pytest.raises(ConfigError) as caught:
        parse_params(strategies=["linear", "film"], strategy_options={"lora": {"rank": 8}})
    message = str(caught.value)
    assert "Options given for 'lora', which this job does not run" in message and "linear, film" in message
    # `auto` runs `full` on a GPU worker and `linear` on a CPU-only one: their options are the job's own
    params = parse_params(strategies=["auto"], strategy_options={"full": {"micro_batch_size": 16}, "linear": {}})
    assert params.options_for("full") == {"micro_batch_size": 16}
    # the ranking audit's runs are the audit strategy's: its options apply to them
    audited = parse_params(strategies=["lora"], audit_ranking=2, strategy_options={"linear": {}})
    assert AUDIT_STRATEGY in audited.runnable_strategies
    with pytest.raises(ConfigError, match="which this job does not run"):
        parse_params(strategies=["lora"], strategy_options={AUDIT_STRATEGY: {}})


# -- split sizes: against the dataset's recorded counts ------------------------------------------------


def test_split_sizes_beyond_a_dataset_with_a_val_split_are_refused(caplog):
    counts = {"train": {"a": 20, "b": 20}, "val": {"a": 5, "b": 5}}
    with pytest.raises(ConfigError) as caught:
        check_counts("toy", counts, JobParams(k=5, n_train=1_000_000))
    message = str(caught.value)
    assert "has a val split" in message and "n_train=1000000 (its train split has 40 images)" in message
    assert "--n-train" in message
    with pytest.raises(ConfigError, match=r"n_val=500 \(its val split has 10 images\)"):
        check_counts("toy", counts, JobParams(k=5, n_val=500))
    with caplog.at_level(logging.WARNING, logger="zooens.pipeline.checks"):
        check_counts("toy", counts, JobParams(k=5, n_train=30))  # within the data: not used, said so
    assert any("not used" in r.getMessage() for r in caplog.records)


# -- strategies: what the job's top-K can serve --------------------------------------------------------


def test_aft_with_one_selected_model_is_refused_before_any_work():
    zoo = resolve_zoo("embedded")
    with pytest.raises(ConfigError) as caught:
        check_job(parse_params(top_k=1, strategies=["linear", "aft"]), zoo)
    message = str(caught.value)
    assert "aft needs at least one teacher other than the student" in message and "top_k is 1" in message
    assert "--top-k" in message
    with pytest.raises(ConfigError, match="the zoo holds 1 model"):
        check_job(parse_params(top_k=3, strategies=["aft"]), zoo[:1])
    with pytest.raises(ConfigError, match="aft needs at least one teacher"):  # `pipeline.fit` and `submit_job` call it
        job_zoo(CHEAPEST, parse_params(top_k=3, strategies=["aft"], taps="none"))
    job_zoo(CHEAPEST, parse_params(top_k=3, strategies=["aft"], taps="auto"))  # the model's layer taps can teach it
    check_job(parse_params(top_k=2, strategies=["aft"]), zoo)
    check_job(parse_params(top_k=1, strategies=["aft"], strategy_options={"aft": {"teachers": [zoo[1].name]}}), zoo)


def test_only_joint_strategies_with_one_selected_model_would_train_nothing():
    zoo = resolve_zoo("embedded")
    with pytest.raises(ConfigError, match="The job would train nothing: concat runs once over several"):
        check_job(parse_params(top_k=1, strategies=["concat"]), zoo)
    check_job(parse_params(top_k=1, strategies=["linear", "concat"]), zoo)  # linear runs; concat is left out
    check_job(parse_params(top_k=2, strategies=["concat"]), zoo)


# -- budget: the zoo's cheapest model, counted without weights -----------------------------------------


def test_a_gflops_budget_no_model_fits_is_refused_naming_the_cheapest():
    """The issue's job: --max-gflops 0.06 at 64 px ran every unit, then failed at the ensemble ("the
    cheapest costs 0.0627"); it is now refused at submission with the same figure."""
    zoo = resolve_zoo("embedded")  # the models alone (a tap is cheaper: the test below)
    with pytest.raises(ConfigError) as caught:
        check_job(parse_params(max_gflops=0.06, resolution=64), zoo)
    message = str(caught.value)
    assert f"{CHEAPEST}, costs 0.06268 GFLOPs for one image at 64x64 px" in message, message
    assert "max_gflops=0.06" in message and "Raise --max-gflops to 0.06268 or more" in message
    check_job(parse_params(max_gflops=0.063, resolution=64), zoo)
    check_job(parse_params(max_latency_ms=1e-6, resolution=64), zoo)  # latency is only known once measured


def test_a_layer_tap_is_counted_as_its_pruned_network():
    """A tap's GFLOPs are its pruned network's, counted on the meta device as a tap run's forward pass is
    (`ensemble.cost.count_flops` on the tap with weights), so a budget the zoo's models all miss is met by a
    tap (`taps` auto, the default), and one below every tap is still refused, naming the cheapest tap."""
    tap = get_weight_set(f"{CHEAPEST}@blocks.2")
    params = parse_params(max_gflops=1.0, resolution=64, strategies=["linear"])
    gflops, size = least_gflops(tap, params)
    assert gflops == pytest.approx(count_flops(create_model(tap, pretrained=False), size) / 1e9, rel=1e-6)
    assert gflops < least_gflops(get_weight_set(CHEAPEST), params)[0] / 3
    taps = job_zoo("embedded", parse_params(taps="auto"))[0]
    check_job(parse_params(max_gflops=0.06, resolution=64), taps)  # the models alone cost 0.0627 and more
    with pytest.raises(ConfigError) as caught:
        check_job(parse_params(max_gflops=gflops * 0.9, resolution=64), taps)
    assert f"the cheapest of the zoo's 12 entries, {tap.name}, costs {gflops:.4g} GFLOPs" in str(caught.value)
    check_job(parse_params(max_gflops=gflops * 1.01, resolution=64), taps)


def test_the_submission_count_is_the_runs_count():
    """What submission counts on the meta device is what a run's forward pass costs (`ensemble.cost`),
    minus the linear head (a few kFLOPs)."""
    ws = get_weight_set(CHEAPEST)
    params = parse_params(max_gflops=1.0, resolution=64, strategies=["linear"])
    assert job_resolutions(ws, params) == [(64, 64)]
    gflops, size = least_gflops(ws, params)
    run = count_flops(create_model(ws, pretrained=False), size) / 1e9
    assert gflops == pytest.approx(run, rel=1e-6)


def test_without_a_resolution_the_least_size_a_run_may_use_is_counted():
    """`auto` may run `full`, whose BiT rule feeds 128 px on a CPU: below the model's own 224."""
    ws = get_weight_set(CHEAPEST)
    assert job_resolutions(ws, parse_params(strategies=["linear"])) == [(224, 224)]
    assert job_resolutions(ws, parse_params(strategies=["auto"])) == [(224, 224), (128, 128)]
    assert least_gflops(ws, parse_params(strategies=["auto"]))[1] == (128, 128)


# -- strategies: which zoo entries each can fine-tune ----------------------------------------------------


def test_a_strategy_that_fits_no_entry_is_refused_and_one_that_fits_some_is_planned_on_those(zooens_home, caplog):
    """kron adapts attention's fused qkv: on a zoo of CNNs no run of it could ever train, known from the
    architectures alone (built on the meta device), so the job is refused at submission; on a mixed zoo
    the job is accepted with a warning and plans kron on the ViT only."""
    from zooens.errors import JobError
    from zooens.pipeline.plan import plan_finetune_units
    from zooens.zoo.testing import register_random_model

    with pytest.raises(ConfigError) as caught:
        check_job(parse_params(strategies=["linear", "kron"]), job_zoo("embedded", parse_params())[0])
    message = str(caught.value)
    assert "Strategy kron can fine-tune none of the zoo's 12 entries" in message
    assert "no attention `qkv` layer; use patch or lora" in message

    register_random_model("tiny-effnet", "test_efficientnet", zooens_home / "w")
    register_random_model("tiny-vit", "test_vit", zooens_home / "w")
    params = parse_params(strategies=["linear", "kron"], taps="none", top_k=2)
    with caplog.at_level(logging.WARNING, logger="zooens.pipeline.checks"):
        zoo, warnings = job_zoo("tiny-effnet,tiny-vit", params)
    assert len(warnings) == 1 and "Strategy kron cannot fine-tune 1 of the zoo's 2 entries (tiny-effnet:" in warnings[0]
    assert any(r.getMessage() == warnings[0] for r in caplog.records)
    keys = plan_finetune_units(["tiny-effnet", "tiny-vit"], params, "cpu", audit=False)
    assert {(k.model_name, k.strategy) for k in keys} == {
        ("tiny-effnet", "linear"),
        ("tiny-vit", "linear"),
        ("tiny-vit", "kron"),
    }
    only_kron = parse_params(strategies=["kron"], taps="none", top_k=1)
    with pytest.raises(JobError, match=r"None of the 1 selected model \(tiny-effnet\) can be fine-tuned with kron"):
        plan_finetune_units(["tiny-effnet", "tiny-vit"], only_kron, "cpu", audit=False)
    assert [k.model_name for k in plan_finetune_units(["tiny-vit", "tiny-effnet"], only_kron, "cpu")] == [
        "tiny-vit"
    ] * len(parse_params().sweep_for("kron", "cpu").grid())
