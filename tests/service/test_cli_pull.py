"""`zooens zoo pull` against the local hub stand-in (the real huggingface_hub client): what the "Done when" of
filling a zoo asks: pull A B, then `zoo list --available --json` lists them; a tampered file is refused and not
listed; offline fails at once and says so; `zoo sets` lists the sets."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from zooens.service.cli import app
from zooens.zoo import download_sizes, get_weight_set, model_facts, zoo_set

A, B, C = "test_efficientnet.r160_in1k", "test_convnext.r160_in1k", "test_resnet.r160_in1k"


def _available() -> set[str]:
    result = CliRunner().invoke(app, ["zoo", "list", "--available", "--json", "--filter", "test_*"])
    assert result.exit_code == 0, result.output
    return {row["name"] for row in json.loads(result.stdout)}


def test_pull_then_list_available(zooens_home, hub):
    hub.add_timm_model(A, seed=1)
    hub.add_timm_model(B, seed=2)
    result = CliRunner().invoke(app, ["zoo", "pull", A, B])
    assert result.exit_code == 0, result.output
    assert f"pulled   {A}" in result.stdout and f"pulled   {B}" in result.stdout
    assert "2 pulled, 0 already here, 0 failed." in result.stdout
    assert _available() == {A, B}

    again = CliRunner().invoke(app, ["zoo", "pull", A, "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert [o["status"] for o in report["outcomes"]] == ["present"]


def test_a_tampered_file_is_refused_removed_and_not_listed(zooens_home, hub):
    hub.add_timm_model(A, seed=1)
    hub.add_timm_model(C, seed=3, announce={"model.safetensors": "0" * 64})  # the hub announces another digest
    result = CliRunner().invoke(app, ["zoo", "pull", A, C])
    assert result.exit_code == 1
    assert f"pulled   {A}" in result.stdout and "1 pulled, 0 already here, 1 failed." in result.stdout
    assert f"failed   {C}" in result.stderr and "0" * 64 in result.stderr
    assert _available() == {A}


def test_offline_pull_fails_at_once_and_says_so(zooens_home, hub, monkeypatch):
    hub.add_timm_model(A, seed=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    result = CliRunner().invoke(app, ["zoo", "pull", A])
    assert time.monotonic() - start < 30  # a failure guard: it takes well under a second
    assert result.exit_code == 2 and result.stderr.startswith("error:") and "offline" in result.stderr
    assert hub.requests == []


def test_download_sizes_are_what_the_hub_announces_and_fetch_nothing(zooens_home, hub):
    hub.add_timm_model(A, seed=1)
    hub.add_timm_model(B, seed=2)
    sizes = download_sizes([A, B])
    assert sizes == {m: len(hub.file_bytes(str(get_weight_set(m).source.hub_id), "model.safetensors")) for m in (A, B)}
    assert hub.body_requests() == []


def test_zoo_sets_lists_every_set_with_its_size_offline(zooens_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["zoo", "sets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["embedded", "user", "diverse-small", "diverse", "packaged"]
    packaged = rows["packaged"]  # the offline set: every weight present, more than one upstream, nothing to fetch
    assert packaged["present"] == len(packaged["models"]) == 4 and packaged["download_bytes"] == 0
    assert packaged["upstreams"] == ["in1k", "other"]
    small = rows["diverse-small"]
    assert 10 <= len(small["models"]) <= 20 and small["models"] == zoo_set("diverse-small").models
    assert small["num_params"] == sum(model_facts(m).num_params for m in small["models"])
    assert len(small["upstreams"]) >= 6 and small["download_bytes"] is None  # offline: the hub cannot be asked
    assert rows["embedded"]["present"] == 3 and rows["embedded"]["download_bytes"] == 0


def _blobs(name: str) -> list[str]:
    from zooens.zoo._hubenv import hub_cache_dir

    blobs = hub_cache_dir() / f"models--{str(get_weight_set(name).source.hub_id).replace('/', '--')}" / "blobs"
    return sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []


def test_a_gated_model_needs_hf_token(zooens_home, hub, monkeypatch):
    token = "hf_cli_test_token"
    hub.add_timm_model(A, seed=1, token=token)
    refused = CliRunner().invoke(app, ["zoo", "pull", A])
    assert refused.exit_code == 1, refused.output
    assert f"failed   {A}" in refused.stderr and "HF_TOKEN" in refused.stderr and "401" in refused.stderr
    assert "0 pulled, 0 already here, 1 failed." in refused.stdout
    assert _available() == set() and _blobs(A) == []

    monkeypatch.setenv("HF_TOKEN", token)
    result = CliRunner().invoke(app, ["zoo", "pull", A, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pulled"] == [A]
    sent = {r.authorization for r in hub.requests_for(str(get_weight_set(A).source.hub_id)) if r.status == 200}
    assert sent == {f"Bearer {token}"}
    assert _available() == {A}


def test_a_file_served_short_fails_the_pull_and_is_not_kept(zooens_home, hub):
    hub.add_timm_model(A, seed=1)
    hub.add_timm_model(C, seed=3)
    repo = str(get_weight_set(C).source.hub_id)
    size = len(hub.file_bytes(repo, "model.safetensors"))
    hub.truncate(repo, "model.safetensors", size - 1000, close=False)
    result = CliRunner().invoke(app, ["zoo", "pull", A, C, "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["pulled"] == [A] and report["failed"] == [C]
    failed = report["outcomes"][1]
    assert failed["files"] == [] and f"announced {size} bytes" in failed["message"]
    assert f"sent {size - 1000}" in failed["message"]
    assert _blobs(C) == [] and _available() == {A}
