"""A job that pulls: `zooens run --pull` fetches the zoo's missing weights from a hub (the local stand-in, through
the real huggingface_hub client) as its first stage, then ranks every model; a second job finds them here."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from zooens.service import registry
from zooens.service.cli import app
from zooens.service.db.session import session_scope
from zooens.zoo import get_weight_set

MODELS = ["test_efficientnet.r160_in1k", "test_convnext.r160_in1k"]
ARGS = [
    "run",
    "--dataset",
    "digits",
    "--zoo",
    ",".join(MODELS),
    "--resolution",
    "32",
    "--strategies",
    "linear",
    "--steps",
    "30",
    "--lr",
    "0.1",
    "--taps",
    "none",
    "--top-k",
    "1",
    "--json",
    "--quiet",
]


def _repo(name: str) -> str:
    return str(get_weight_set(name).source.hub_id)


def test_run_with_pull_fetches_what_is_missing_and_ranks_every_model(zooens_home, db_url, hub):
    for seed, name in enumerate(MODELS):
        hub.add_timm_model(name, seed=seed)
    assert not any(get_weight_set(m).weights_present for m in MODELS)

    refused = CliRunner().invoke(app, ARGS)  # without --pull: refused before any work, naming the pull
    assert refused.exit_code == 2 and "zooens zoo pull" in refused.stderr and "--pull" in refused.stderr
    assert hub.body_requests() == []

    result = CliRunner().invoke(app, [*ARGS, "--pull"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["job"]["status"] == "succeeded"
    assert {r["model_name"] for r in report["ranking"]} == set(MODELS)
    assert report["job"]["progress"]["pull"] == {"done": 2, "total": 2, "current": None}
    assert all(get_weight_set(m).weights_present for m in MODELS)
    for name in MODELS:  # each body served once, whole
        size = len(hub.file_bytes(_repo(name), "model.safetensors"))
        assert hub.served_bytes(_repo(name), "model.safetensors") == size
    with session_scope() as s:
        units = {u.key: u for u in registry.list_units(s, report["job"]["id"])}
    assert [k for k in units if k.startswith("pull:")] == [f"pull:{m}" for m in MODELS]
    assert all(units[f"pull:{m}"].result["status"] == "pulled" for m in MODELS)

    served = len(hub.body_requests())
    again = CliRunner().invoke(app, ARGS)  # the weights are here now: no --pull needed, nothing fetched
    assert again.exit_code == 0, again.output
    assert len(hub.body_requests()) == served
