"""The zoo over HTTP: catalogue rows with their facts, the facts' filters, and weight pulls run by the server for a
token holder (against the hub stand-in, no network)."""

from __future__ import annotations

import math
import time

import pytest

from tests.hub_stand_in import hub  # noqa: F401  the fixture
from zooens.zoo import get_weight_set
from zooens.zoo._facts import UPSTREAM_CATEGORIES

FACT_KEYS = ("upstream", "upstream_data", "num_params", "gflops", "imagenet_top1", "weights_present")
PULLED = "test_vit.r160_in1k"


def _all_rows(client, **params) -> list[dict]:
    resp = client.get("/api/v1/zoo", params={"limit": 2000, **params})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == len(body["data"]), "the catalogue fits one page of 2000"
    return body["data"]


def _names(rows) -> list[str]:
    return [r["name"] for r in rows]


def test_rows_carry_the_catalogue_facts(client):
    rows = _all_rows(client)
    assert len(rows) > 1000
    for r in rows:
        assert all(k in r for k in FACT_KEYS), r["name"]
        assert r["upstream"] in UPSTREAM_CATEGORIES, r["name"]
        assert r["num_params"] is None or r["num_params"] > 0
        assert r["gflops"] is None or (r["gflops"] > 0 and math.isfinite(r["gflops"]))
        assert r["imagenet_top1"] is None or 0 < r["imagenet_top1"] <= 100
    lite0 = next(r for r in rows if r["name"] == "tf_efficientnet_lite0.in1k")
    assert lite0["upstream"] == "in1k" and lite0["num_params"] > 1_000_000 and lite0["gflops"] > 0.1
    # the categories are read from the tags: CLIP tags are image-text, in22k tags in21k
    by_name = {r["name"]: r for r in rows}
    clip = [n for n in by_name if ".openai" in n or "clip_laion2b" in n]
    assert clip and all(by_name[n]["upstream"] == "image-text" for n in clip)
    in22k = [n for n in by_name if n.endswith(".fb_in22k") and "convnext" in n]
    assert in22k and all(by_name[n]["upstream"] == "in21k" for n in in22k)
    one = client.get("/api/v1/zoo/tf_efficientnet_lite0.in1k").json()
    assert {k: one[k] for k in FACT_KEYS} == {k: lite0[k] for k in FACT_KEYS}


def test_the_first_request_is_fast(client):
    start = time.perf_counter()
    assert client.get("/api/v1/zoo", params={"limit": 5}).status_code == 200
    assert time.perf_counter() - start < 10  # the catalogue is warmed at start-up and never counts FLOPs per row


def _expect(rows, *, upstream=None, lo=None, hi=None, members=None, available=False, glob=None):
    import fnmatch

    out = []
    for r in rows:
        n = r["num_params"]
        if upstream is not None and r["upstream"] != upstream:
            continue
        if lo is not None and (n is None or n / 1e6 < lo):
            continue
        if hi is not None and (n is None or n / 1e6 > hi):
            continue
        if members is not None and r["name"] not in members:
            continue
        if available and not r["weights_present"]:
            continue
        if glob is not None and not fnmatch.fnmatchcase(r["name"].lower(), glob):
            continue
        out.append(r["name"])
    return out


def test_each_filter_narrows_like_an_independent_filter(client):
    rows = _all_rows(client)
    for category in UPSTREAM_CATEGORIES:
        got = _names(_all_rows(client, upstream=category))
        assert got == _expect(rows, upstream=category), category
    sized = [r for r in rows if r["num_params"] is not None]
    assert sized, "some rows have parameter counts"
    got = _names(_all_rows(client, max_params=5))
    assert got == _expect(rows, hi=5) and got
    got = _names(_all_rows(client, min_params=4, max_params=5))
    assert got == _expect(rows, lo=4, hi=5)
    assert all(4e6 <= r["num_params"] <= 5e6 for r in _all_rows(client, min_params=4, max_params=5))
    got = _names(_all_rows(client, min_params=300))
    assert got == _expect(rows, lo=300)
    combined = _names(_all_rows(client, upstream="in1k", max_params=10, filter="*efficientnet*"))
    assert combined == _expect(rows, upstream="in1k", hi=10, glob="*efficientnet*") and combined
    sets = client.get("/api/v1/zoo/sets").json()["sets"]
    for name in sets:
        if not sets[name]:
            continue
        got = _names(_all_rows(client, set=name))
        assert got and set(got) <= set(_names(rows))
        assert got == [n for n in _names(rows) if n in set(sets[name])] or name in ("diverse", "diverse-small"), name
    assert _names(_all_rows(client, set="embedded")) == sorted(sets["embedded"])
    assert _names(_all_rows(client, available=True)) == _expect(rows, available=True)


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"min_params": "nan"}, "finite"),
        ({"max_params": "NaN"}, "finite"),
        ({"max_params": "inf"}, "finite"),
        ({"min_params": "-1"}, "greater than or equal"),
        ({"max_params": "1e12"}, "less than or equal"),
        ({"max_params": "ten"}, "number"),
        ({"upstream": "imagenet"}, "Unknown upstream category"),
        ({"set": "no-such-set"}, "Unknown zoo set"),
        ({"min_params": "5", "max_params": "1"}, "above max_params"),
    ],
)
def test_bad_filter_values_are_422(client, params, needle):
    resp = client.get("/api/v1/zoo", params=params)
    assert resp.status_code == 422, resp.text
    assert needle in resp.text


# --- pulls ---


def test_pull_needs_a_token(client, token):
    body = {"models": [PULLED]}
    resp = client.post("/api/v1/zoo/pull", json=body)
    assert resp.status_code == 401 and "token" in resp.json()["detail"]
    resp = client.post("/api/v1/zoo/pull", json=body, headers={"Authorization": "Bearer zooens_nope"})
    assert resp.status_code == 401
    # the dashboard's read session (the cookie) never authorises a write
    client.cookies.set("zooens_session", token)
    try:
        assert client.post("/api/v1/zoo/pull", json=body).status_code == 401
    finally:
        client.cookies.clear()


def test_pull_offline_is_refused_at_once(client, auth, monkeypatch, hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    resp = client.post("/api/v1/zoo/pull", json={"models": [PULLED]}, headers=auth)
    assert resp.status_code == 503, resp.text
    assert "offline" in resp.json()["detail"] and "HF_HUB_OFFLINE" in resp.json()["detail"]
    assert time.perf_counter() - start < 3


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"models": ["no_such_model_xyz.in1k"]}, 404, "no_such_model_xyz"),
        ({"models": ["no_such_family_*"]}, 404, "no_such_family_"),
        ({"models": ["*"]}, 422, "at most 64"),
        ({"models": ["resnet*"]}, 422, "at most 64"),
        ({"models": [f"m{i}" for i in range(65)]}, 422, "at most 64"),
        ({"models": ["x" * 301]}, 422, "at most 300"),
        ({"models": []}, 422, "at least 1"),
        ({"models": ["resnet18.a1_in1k\x00"]}, 422, "control characters"),
        ({"models": "resnet18.a1_in1k"}, 422, "list"),
        ({"names": ["resnet18.a1_in1k"]}, 422, "models"),
    ],
)
def test_pull_refuses_bad_input(client, auth, body, status, needle):
    resp = client.post("/api/v1/zoo/pull", json=body, headers=auth)
    assert resp.status_code == status, resp.text
    assert needle in resp.text


def test_unknown_pull_is_404(client):
    assert client.get("/api/v1/zoo/pulls/0123abcd").status_code == 404
    assert client.get("/api/v1/zoo/pulls/not-hex!").status_code == 422


def test_pull_statuses_are_in_the_openapi(client):
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/api/v1/zoo/pull"]["post"]
    assert {"202", "401", "404", "422", "503"} <= set(post["responses"])
    assert "404" in doc["paths"]["/api/v1/zoo/pulls/{pull_id}"]["get"]["responses"]
    params = {p["name"] for p in doc["paths"]["/api/v1/zoo"]["get"]["parameters"]}
    assert {"upstream", "min_params", "max_params", "set", "filter", "available"} <= params


def _wait_pull(client, pull_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/zoo/pulls/{pull_id}").json()
        if body["status"] != "running":
            return body
        time.sleep(0.1)
    raise AssertionError(f"pull {pull_id} still running after {timeout} s")


def test_a_real_pull_succeeds_and_the_model_becomes_available(client, auth, hub):  # noqa: F811
    hub.add_timm_model(PULLED)
    assert PULLED not in _names(_all_rows(client, available=True))
    resp = client.post("/api/v1/zoo/pull", json={"models": [PULLED]}, headers=auth)
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["models"] == [PULLED] and started["status"] in ("running", "succeeded")
    done = _wait_pull(client, started["id"])
    assert done["status"] == "succeeded", done
    assert [(o["model"], o["status"]) for o in done["outcomes"]] == [(PULLED, "pulled")]
    size = len(hub.file_bytes("timm/" + PULLED, "model.safetensors"))
    assert done["total_bytes"] == size and done["done_bytes"] == size
    assert done["files"] and done["files"][0]["filename"] == "model.safetensors"
    assert PULLED in _names(_all_rows(client, available=True))
    assert client.get(f"/api/v1/zoo/{PULLED}").json()["weights_present"] is True
    # a second pull finds the weights here
    again = client.post("/api/v1/zoo/pull", json={"models": [PULLED]}, headers=auth).json()
    again = _wait_pull(client, again["id"])
    assert again["status"] == "succeeded" and again["outcomes"][0]["status"] == "present"


def test_a_model_being_pulled_is_not_pulled_twice(client, auth, hub):  # noqa: F811
    hub.add_timm_model(PULLED)
    repo = "timm/" + PULLED
    hub.stall_after(repo, "model.safetensors", 1024)
    try:
        first = client.post("/api/v1/zoo/pull", json={"models": [PULLED]}, headers=auth).json()
        assert first["status"] == "running"
        second = client.post("/api/v1/zoo/pull", json={"models": [PULLED]}, headers=auth)
        assert second.status_code == 202 and second.json()["id"] == first["id"]
    finally:
        hub.release()
    done = _wait_pull(client, first["id"])
    assert done["status"] == "succeeded", done
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert len(gets) == 1, gets


# --- a job that pulls ---

JOB_MODELS = ["test_efficientnet.r160_in1k", "test_convnext.r160_in1k"]


@pytest.fixture
def worker_client(db_url):
    """The app with its in-process worker thread (`zooens serve --with-worker`): a queued job is run here."""
    from fastapi.testclient import TestClient

    from zooens.service.app import create_app

    with TestClient(create_app(with_worker=True)) as c:
        yield c


def _wait_job(client, job_id: int, timeout: float = 300.0) -> tuple[dict, set[str]]:
    deadline = time.monotonic() + timeout
    stages: set[str] = set()
    while time.monotonic() < deadline:
        state = client.get(f"/api/v1/jobs/{job_id}").json()
        if state["stage"]:
            stages.add(state["stage"])
        if state["status"] in ("succeeded", "failed", "cancelled"):
            return state, stages
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {state['status']} after {timeout} s")


def test_a_job_with_pull_fetches_the_missing_weights_then_ranks(worker_client, auth, hub):  # noqa: F811
    from tests.service.api.conftest import digits_zip

    client = worker_client
    for seed, name in enumerate(JOB_MODELS):
        hub.add_timm_model(name, seed=seed)
    rows = {r["name"]: r for r in _all_rows(client, filter="test_*")}
    assert not any(rows[m]["weights_present"] for m in JOB_MODELS)
    ds = client.post("/api/v1/datasets", files={"file": ("digits.zip", digits_zip(), "application/zip")}, headers=auth)
    assert ds.status_code == 201, ds.text
    body = {
        "dataset_id": ds.json()["id"],
        "zoo": JOB_MODELS,
        "resolution": 32,
        "strategies": ["linear"],
        "steps": [30],
        "learning_rates": [0.1],
        "taps": "none",
        "top_k": 1,
    }
    refused = client.post("/api/v1/jobs", json=body, headers=auth)  # missing weights, no pull: refused at once
    assert refused.status_code == 422 and "zooens zoo pull" in refused.text, refused.text
    assert client.post("/api/v1/jobs", json={**body, "pull": True}).status_code == 401  # a write needs the token
    repo = str(get_weight_set(JOB_MODELS[-1]).source.hub_id)  # the last pull unit
    hub.stall_after(repo, "model.safetensors", 4096)  # the catalogue is read while a file is mid-way
    try:
        job = client.post("/api/v1/jobs", json={**body, "pull": True}, headers=auth)
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        assert job.json()["params"]["pull"] is True
        deadline = time.monotonic() + 120
        while hub.served_bytes(repo, "model.safetensors") < 4096:
            assert time.monotonic() < deadline, client.get(f"/api/v1/jobs/{job_id}").json()
            time.sleep(0.05)
        running = client.get(f"/api/v1/jobs/{job_id}").json()
        assert running["status"] == "running" and running["stage"] == "pull", running
        mid = {r["name"]: r for r in _all_rows(client, filter="test_*")}
        assert not mid[JOB_MODELS[-1]]["weights_present"]
    finally:
        hub.release()
    state, stages = _wait_job(client, job_id)
    assert state["status"] == "succeeded", state["error"]
    assert "pull" in stages
    assert state["progress"]["pull"] == {"done": 2, "total": 2, "current": None}
    assert state["progress"]["embed"]["done"] == state["progress"]["embed"]["total"] == 2
    ranking = client.get(f"/api/v1/jobs/{job_id}/ranking").json()
    assert {r["model_name"] for r in ranking} == set(JOB_MODELS)
    for name in JOB_MODELS:  # each body served whole, once (after its stall)
        repo_of = str(get_weight_set(name).source.hub_id)
        assert hub.served_bytes(repo_of, "model.safetensors") == len(hub.file_bytes(repo_of, "model.safetensors"))
        assert client.get(f"/api/v1/zoo/{name}").json()["weights_present"] is True
    # the catalogue was read mid-download: it is rebuilt once the weights are in (the pull touches the hub cache)
    listed = {r["name"]: r for r in _all_rows(client, filter="test_*")}
    assert all(listed[m]["weights_present"] for m in JOB_MODELS), {m: listed[m]["weights_present"] for m in JOB_MODELS}
    assert set(JOB_MODELS) <= set(_names(_all_rows(client, available=True)))
