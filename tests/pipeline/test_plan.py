"""Unit keys format and parse themselves; the ranking and the plan are deterministic; params are
validated once; the package's names come from their modules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zooens.ensemble import get_strategy
from zooens.errors import ConfigError, JobError
from zooens.pipeline import JobParams, UnitKey, parse_params, plan_finetune_units, plan_pull_units, rank_models
from zooens.pipeline.records import EmbedRecord

MODEL = st.from_regex(r"[a-z][a-z0-9_]{0,20}\.[a-z0-9_]{1,12}", fullmatch=True)


@given(MODEL, st.sampled_from(["linear", "full", "lora"]), st.floats(1e-6, 10.0), st.integers(1, 10**6))
def test_finetune_key_round_trips(model_name, strategy, lr, steps):
    key = UnitKey.finetune(model_name, strategy, lr, steps)
    again = UnitKey.parse(str(key))
    assert again.kind == "finetune" and again.model_name == model_name and again.strategy == strategy
    assert again.steps == steps and again.lr == pytest.approx(float(f"{lr:g}"))
    assert str(again) == str(key)


def test_key_spellings():
    assert str(UnitKey.embed("a.b")) == "embed:a.b"
    assert str(UnitKey.finetune("a.b", "linear", 0.01, 300)) == "finetune:a.b:linear:lr=0.01:steps=300"
    assert str(UnitKey.ensemble()) == "ensemble"
    assert UnitKey.parse("ensemble") == UnitKey.ensemble()
    assert UnitKey.parse("embed:a.b") == UnitKey.embed("a.b")
    assert str(UnitKey.pull("a.b")) == "pull:a.b" and UnitKey.parse("pull:a.b") == UnitKey.pull("a.b")
    assert "/" not in UnitKey.finetune("x/y", "linear", 0.1, 1).slug


@pytest.mark.parametrize(
    "text",
    [
        "",
        "embed",
        "embed:",
        "pull",
        "pull:",
        "finetune:a:b",
        "finetune:m:s:0.1:300",
        "ensemble:x",
        "finetune:m:s:lr=x:steps=1",
        "bogus:m",
    ],
)
def test_bad_keys_are_refused(text):
    with pytest.raises(JobError, match="not a unit key"):
        UnitKey.parse(text)


def test_ranking_and_plan_are_deterministic():
    def score(name, knn, val):
        return EmbedRecord(
            model_name=name,
            k=1,
            knn_accuracy=knn,
            val_accuracy=val,
            logme=None,
            embed_seconds=0.0,
            images_per_s=None,
            params=None,
            embed_dim=1,
            cached=False,
            dataset_fingerprint="f",
            embeddings=[],
        )

    ranked = rank_models([score("c", 0.5, 0.1), score("a", 0.9, 0.2), score("b", 0.5, 0.3), score("d", 0.5, 0.3)])
    assert ranked == ["a", "b", "d", "c"]
    params = JobParams(top_k=2, strategies=["linear"], learning_rates=[0.1, 0.01], steps=[5])
    assert [str(k) for k in plan_finetune_units(ranked, params)] == [
        "finetune:a:linear:lr=0.1:steps=5",
        "finetune:a:linear:lr=0.01:steps=5",
        "finetune:b:linear:lr=0.1:steps=5",
        "finetune:b:linear:lr=0.01:steps=5",
    ]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"strategies": ["bogus"]}, "Unknown strategy"),
        ({"top_k": 0}, "top_k"),
        ({"learning_rates": [-1.0]}, "lr"),
        ({"steps": [0]}, "steps"),
        ({"strategy_options": {"nope": {"x": 1}}}, "unknown strategy"),
        ({"strategy_options": {"lora": {"bogus": 1}}}, "lora"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_params_refuse_bad_values_with_a_domain_error(fields, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(**fields)


def test_params_round_trip_through_the_stored_json():
    params = parse_params(strategies=["linear", "lora"], batch_size=16, strategy_options={"lora": {"rank": 2}})
    assert JobParams.model_validate(params.model_dump()) == params
    assert params.sweep_for("linear").batch_size == 16


def test_auto_resolves_where_units_are_planned():
    """`auto` (the default) is `full` on a CUDA worker and `linear` on a CPU one, each with its own sweep."""
    params = JobParams(top_k=1)
    assert params.strategies == ["auto", "concat"] and params.augmentation == "auto"  # concat needs top_k >= 2
    on_gpu = [str(k) for k in plan_finetune_units(["m"], params, device="cuda")]
    assert on_gpu == [f"finetune:m:full:lr={lr:g}:steps={n}" for lr in (0.001, 0.003, 0.01) for n in (250, 500)]
    on_cpu = [str(k) for k in plan_finetune_units(["m"], params, device="cpu")]
    linear = get_strategy("linear").default_sweep
    assert on_cpu == [f"finetune:m:linear:lr={hp['lr']:g}:steps={hp['steps']}" for hp in linear.grid()]
    both = JobParams(top_k=1, strategies=["auto", "linear"], learning_rates=[0.1], steps=[5])
    assert [str(k) for k in plan_finetune_units(["m"], both, device="cpu")] == ["finetune:m:linear:lr=0.1:steps=5"]


def test_a_joint_strategy_is_planned_once_over_the_top_k():
    """`concat` (a default strategy) reads the whole top-K: one run keyed by the best-ranked model, after the
    per-model runs; none with a single selected model."""
    params = JobParams(top_k=2)
    keys = [str(k) for k in plan_finetune_units(["m1", "m2", "m3"], params, device="cpu")]
    lin = get_strategy("linear").default_sweep.grid()[0]
    point = f"lr={lin['lr']:g}:steps={lin['steps']}"
    assert keys == [f"finetune:m1:linear:{point}", f"finetune:m2:linear:{point}", f"finetune:m1:concat:{point}"]
    assert not any(":concat:" in str(k) for k in plan_finetune_units(["m1", "m2"], JobParams(top_k=1), device="cpu"))
    assert not any(":concat:" in str(k) for k in plan_finetune_units(["m1"], JobParams(top_k=3), device="cpu"))


def test_augmentation_is_a_checked_job_parameter():
    assert parse_params(augmentation="crop_flip").augmentation == "crop_flip"
    with pytest.raises(ConfigError, match="augmentation"):
        parse_params(augmentation="mirror")
    with pytest.raises(ConfigError, match="auto"):
        parse_params(strategy_options={"auto": {"rank": 2}})


def test_the_package_exports_every_name_from_its_home_without_importing_torch():
    import subprocess
    import sys

    import zooens.pipeline as pipeline

    for name in pipeline.__all__:
        assert getattr(pipeline, name) is getattr(
            __import__(f"zooens.pipeline.{pipeline._HOME_OF[name]}", fromlist=[name]), name
        )
    assert sorted(pipeline._HOME_OF) == sorted(pipeline.__all__)
    code = "import sys, zooens.pipeline.params as p; p.JobParams.model_fields; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the CLI reads JobParams' fields at start-up


def test_a_pull_job_pulls_each_hub_model_once_and_nothing_else():
    """Hub models get a pull unit each (a layer tap its model's, once); packaged weights none; no `pull`, no units."""
    zoo = [
        "convnext_tiny.fb_in1k",
        "convnext_tiny.fb_in1k@stages.2",
        "tf_efficientnet_lite0.in1k",  # embedded: weights from a package
        "resnet18.a1_in1k",
    ]
    keys = plan_pull_units(zoo, JobParams(pull=True))
    assert [str(k) for k in keys] == ["pull:convnext_tiny.fb_in1k", "pull:resnet18.a1_in1k"]
    assert plan_pull_units(zoo, JobParams()) == []


def test_full_sweeps_learning_rate_and_schedule_length_on_a_gpu_and_runs_once_on_a_cpu():
    """On a GPU the greedy step gets several `full` runs per model to choose from: lr around BiT's 0.003 x the
    rule's schedule and half of it; on a CPU one run (BiT's rule); a user's grid replaces either."""
    params = JobParams(strategies=["full"], top_k=2)
    gpu = plan_finetune_units(["a", "b"], params, "cuda")
    assert [(k.model_name, k.lr, k.steps) for k in gpu] == [
        (m, lr, steps) for m in ("a", "b") for lr in (0.001, 0.003, 0.01) for steps in (250, 500)
    ]
    assert [(k.lr, k.steps) for k in plan_finetune_units(["a"], params, "cpu")] == [(0.003, 500)]
    given = JobParams(strategies=["full"], top_k=1, learning_rates=[0.02], steps=[40])
    assert [(k.lr, k.steps) for k in plan_finetune_units(["a"], given, "cuda")] == [(0.02, 40)]
