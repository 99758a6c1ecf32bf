"""Checks before work: every one refuses (or warns) before a job exists, in one short line, recording nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.ensemble._registry import STRATEGIES
from zooens.errors import ConfigError
from zooens.pipeline import JobParams
from zooens.pipeline.params import parse_params
from zooens.service.cli import app
from zooens.service.db.models import Dataset
from zooens.service.jobs import check_dataset
from zooens.zoo import add_user_model, create_model

SUBMIT_LOGGER = "zooens.pipeline.checks"


def _image_folder(root: Path, counts: dict[str, int]) -> str:
    """A real ImageFolder with `counts` PNGs per class and no split folders (train only)."""
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return str(root)


def _refused(args: list[str]) -> str:
    """Run `zooens ARGS`; it must fail with exit code 2, one line on stderr, and nothing in the registry."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    upgrade_to_head()
    with session_scope() as s:
        assert registry.list_jobs(s)[1] == 0 and registry.list_datasets(s)[1] == 0
    return message


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_refuses_an_unknown_option_when_the_params_are_built(name):
    with pytest.raises(ConfigError, match="foo" if name != "auto" else "takes no options") as caught:
        parse_params(strategies=[name], strategy_options={name: {"foo": 1}})
    assert "\n" not in str(caught.value)


def test_an_unknown_strategy_option_fails_at_once(zooens_home):
    message = _refused(["run", "--dataset", "digits", "--zoo", "embedded", "-o", "linear.foo=1", "--quiet"])
    assert "Unknown option(s) foo for strategy 'linear'" in message


def test_k_beyond_the_training_set_is_refused_before_anything(zooens_home, tmp_path):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    data = _image_folder(tmp_path / "58", {"a": 29, "b": 29})
    message = _refused(["run", "--data", data, "--zoo", "user", "--k", "500", "--quiet"])
    assert "k=500" in message and "lower k" in message


def test_n_train_asked_beyond_the_images_is_refused(zooens_home, tmp_path):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    data = _image_folder(tmp_path / "72", {"a": 36, "b": 36})
    message = _refused(["run", "--data", data, "--zoo", "user", "--n-train", "5000", "--quiet"])
    assert "n_train=5000" in message and "72 training images" in message and "--n-train" in message


def _dataset(train: dict[str, int], val: dict[str, int] | None = None) -> Dataset:
    counts = {"train": train} | ({"val": val} if val else {})
    return Dataset(name="toy", source="/toy", fingerprint="0" * 64, classes=list(train), counts=counts)


def test_default_split_sizes_beyond_the_images_warn_with_the_sizes_used(caplog):
    with caplog.at_level(logging.WARNING, logger=SUBMIT_LOGGER):
        check_dataset(_dataset({"a": 36, "b": 36}), JobParams(k=5))
    warned = [r.getMessage() for r in caplog.records if r.name == SUBMIT_LOGGER]
    assert any("72 training images" in m and "n_train=58 and n_val=14" in m for m in warned), warned


def test_split_sizes_that_fit_or_a_val_split_say_nothing_and_explicit_sizes_with_val_are_ignored_aloud(caplog):
    with caplog.at_level(logging.WARNING, logger=SUBMIT_LOGGER):
        check_dataset(_dataset({"a": 600, "b": 600}), JobParams())
        check_dataset(_dataset({"a": 20, "b": 20}, {"a": 5, "b": 5}), JobParams(k=5))
    assert [r for r in caplog.records if r.name == SUBMIT_LOGGER] == []
    with caplog.at_level(logging.WARNING, logger=SUBMIT_LOGGER):
        check_dataset(_dataset({"a": 20, "b": 20}, {"a": 5, "b": 5}), JobParams(k=5, n_train=30))
    assert any("not used" in r.getMessage() for r in caplog.records if r.name == SUBMIT_LOGGER)


def test_k_above_the_smallest_class_warns_clearly(caplog):
    with caplog.at_level(logging.WARNING, logger=SUBMIT_LOGGER):
        check_dataset(_dataset({"big": 40, "tiny": 4}, {"big": 5, "tiny": 5}), JobParams(k=10))
    warned = [r.getMessage() for r in caplog.records if r.name == SUBMIT_LOGGER]
    assert len(warned) == 1 and "k=10" in warned[0] and "'tiny'" in warned[0] and "4 training examples" in warned[0]


def test_a_zoo_without_weights_gets_one_short_message_once(zooens_home, hub_cache):
    message = _refused(["run", "--dataset", "digits", "--zoo", "convnext_tiny.*", "--quiet"])
    assert "matched" in message and "none has weights on this machine" in message
    assert str(hub_cache) in message and "zooens zoo add" in message
    assert len(message) < 600 and message.count("no weights") + message.count("none has weights") == 1
    assert "convnext_tiny.fb_in1k" not in message  # a count, not the list
    assert "zooens zoo pull 'convnext_tiny.*'" in message  # the zoo as asked for


def test_a_zoo_set_typo_suggests_the_set(zooens_home):
    message = _refused(["run", "--dataset", "digits", "--zoo", "embeded", "--quiet"])
    assert "did you mean 'embedded'?" in message


def test_missing_hub_weights_name_the_pull_command_and_the_pull_option(zooens_home, hub_cache):
    message = _refused(["run", "--dataset", "digits", "--zoo", "convnext_tiny.fb_in1k", "--quiet"])
    assert "zooens zoo pull convnext_tiny.fb_in1k" in message and "--pull" in message


def test_a_pull_job_is_refused_at_submission_when_offline(zooens_home, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _refused(["run", "--dataset", "digits", "--zoo", "convnext_tiny.fb_in1k", "--pull", "--quiet"])
    assert "offline" in message and "HF_HOME" in message and "convnext_tiny.fb_in1k" in message


def test_pull_does_not_excuse_weights_no_hub_serves(zooens_home, hub_cache, monkeypatch, tmp_path):
    """A user model whose file went missing cannot be pulled: --pull still refuses it, before any work."""
    weights = tmp_path / "mine.pt"
    torch.save(create_model("tf_efficientnet_lite0.in1k", pretrained=False).state_dict(), weights)
    add_user_model("mine", "tf_efficientnet_lite0", weights)
    weights.unlink()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    message = _refused(["run", "--dataset", "digits", "--zoo", "mine", "--pull", "--quiet"])
    assert "the hub does not serve them" in message and "zooens zoo add" in message


# issue 26, failures 2 and 9: whatever can be known at submission is refused at submission, before any work


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--top-k", "1", "--strategies", "linear,patch,aft"], "aft needs at least one teacher other than the student"),
        (["--max-gflops", "0.06", "--resolution", "64", "--taps", "none"], "tf_efficientnet_lite0.in1k, costs 0.06268"),
        (["--max-gflops", "0.018", "--resolution", "64"], "tf_efficientnet_lite0.in1k@blocks.2, costs 0.01857 GFLOPs"),
        (["--strategies", "linear,kron"], "Strategy kron can fine-tune none of the zoo's 12 entries"),
        (["--lr", "1e300"], "lr must be a positive number at most 10"),
        (["--strategies", "linear", "-o", "lora.rank=8"], "Options given for 'lora', which this job does not run"),
        (["--strategies", "lora", "-o", "lora.rank=1000000000"], "LoRA rank must be an integer from 1 to 1024"),
    ],
    ids=["aft-top-k-1", "gflops-budget", "gflops-budget-taps", "kron-on-cnns", "lr", "options-not-run", "lora-rank"],
)
def test_a_job_that_could_never_finish_is_refused_by_the_cli_before_any_work(zooens_home, args, expected):
    message = _refused(["run", "--dataset", "digits", "--zoo", "embedded", *args, "--quiet"])
    assert expected in message, message


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("registry")}


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"top_k": 1, "strategies": ["linear", "aft"]}, "aft needs at least one teacher other than the student"),
        ({"max_gflops": 0.06, "resolution": 64, "taps": "none"}, "costs 0.06268 GFLOPs for one image at 64x64 px"),
        ({"max_gflops": 0.018, "resolution": 64}, "@blocks.2, costs 0.01857 GFLOPs for one image at 64x64 px"),
        ({"strategies": ["kron"]}, "no attention `qkv` layer; use patch or lora for other architectures"),
        ({"learning_rates": [1e300]}, "lr must be a positive number at most 10"),
        ({"strategies": ["linear"], "strategy_options": {"film": {"head": "lda"}}}, "which this job does not run"),
        ({"strategies": ["lora"], "strategy_options": {"lora": {"rank": 10**9}}}, "LoRA rank must be an integer"),
        ({"n_train": 1_000_000}, "n_train=1000000 (its train split has 40 images)"),
    ],
    ids=[
        "aft-top-k-1",
        "gflops-budget",
        "gflops-budget-taps",
        "kron-on-cnns",
        "lr",
        "options-not-run",
        "lora-rank",
        "n-train-with-val",
    ],
)
def test_the_api_answers_422_and_stores_nothing(db_url, zooens_home, body, expected):
    from fastapi.testclient import TestClient

    from zooens.service import registry
    from zooens.service.app import create_app
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        token, _ = registry.create_token(s, "tester")
        dataset = registry.get_or_create_dataset(
            s,
            name="toy",
            source="/toy",
            fingerprint="0" * 64,
            classes=["a", "b"],
            counts={"train": {"a": 20, "b": 20}, "val": {"a": 5, "b": 5}},
        )
        dataset_id = dataset.id
    before = _files(zooens_home)
    with TestClient(create_app()) as client:
        r = client.post(
            "/api/v1/jobs",
            json={"dataset_id": dataset_id, "zoo": "embedded", "k": 5, **body},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 422, r.text
    assert expected in r.text
    with session_scope() as s:
        assert registry.list_jobs(s)[1] == 0
    assert _files(zooens_home) == before
