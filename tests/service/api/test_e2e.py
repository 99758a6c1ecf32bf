"""End to end through a real `zooens serve --with-worker` process on a local port (SQLite and PostgreSQL):
upload digits as a zip, create a job, poll it to the end, read ranking and ensemble, predict."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.service._live import start_server, stop_server
from tests.service._tiny import register_tiny_zoo
from tests.service.api.conftest import digits_zip, png_bytes


@pytest.fixture
def server(db_url, zooens_home):
    register_tiny_zoo(zooens_home / "weights")
    proc, url = start_server(zooens_home, db_url, with_worker=True)
    yield url
    stop_server(proc)


@pytest.mark.slow
def test_submit_follow_and_predict_over_http(server, token):
    h = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server + "/api/v1", timeout=60) as c:
        ds = c.post("/datasets", files={"file": ("digits.zip", digits_zip(), "application/zip")}, headers=h)
        assert ds.status_code == 201, ds.text
        assert ds.json()["counts"]["train"]["3"] == 40
        job = c.post(
            "/jobs",
            headers=h,
            json={
                "dataset_id": ds.json()["id"],
                "zoo": "user",
                "top_k": 2,
                "strategies": ["linear"],
                "learning_rates": [0.1, 1.0],
                "steps": [60],
                "resolution": 32,
                "n_train": 300,
                "n_val": 100,
            },
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        seen_stages = set()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            answer = c.get(f"/jobs/{job_id}")
            assert answer.status_code == 200, (
                f"GET /jobs/{job_id} while the job runs: {answer.status_code} {answer.text}"
            )
            state = answer.json()
            if state["stage"]:
                seen_stages.add(state["stage"])
            if state["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.3)
        assert state["status"] == "succeeded", state["error"]
        # the default job ranks the 3 models and their layer taps (`taps` auto), one embed unit each
        embedded = state["progress"]["embed"]
        assert embedded["done"] == embedded["total"] > 3 and embedded["current"] is None
        assert state["progress"]["finetune"]["done"] == 4
        ranking = c.get(f"/jobs/{job_id}/ranking").json()
        assert len(ranking) == embedded["total"] and ranking[0]["knn_accuracy"] >= ranking[-1]["knn_accuracy"]
        assert {r["model_name"].split("@")[0] for r in ranking} == {"tiny-effnet", "tiny-resnet", "tiny-convnext"}
        assert sum("@" not in r["model_name"] for r in ranking) == 3
        runs = c.get(f"/jobs/{job_id}/runs").json()
        assert len(runs) == 4
        ens = c.get(f"/jobs/{job_id}/ensemble").json()
        # cross-fitted probes: the greedy selected on train's held-out rows and val's, where the kept ensemble is
        # never worse than its first pick (the best single run there); `loss_curve` is those rows' cross-entropy
        assert all(r["hparams"]["refit_folds"] == 5 for r in runs)
        assert ens["loss_curve"][ens["size"] - 1] <= ens["loss_curve"][0] + 1e-9
        assert 0 < ens["val_ce"] < 10
        files = [("files", (f"{i}.png", png_bytes(i, size=8), "image/png")) for i in range(3)]
        pred = c.post(f"/ensembles/{ens['id']}/predict", files=files)
        assert pred.status_code == 200, pred.text
        body = pred.json()
        assert body["classes"] == [str(i) for i in range(10)] and len(body["data"]) == 3
        for p in body["data"]:
            assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
            assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
        bad = c.post(f"/ensembles/{ens['id']}/predict", files=[("files", ("x.png", b"nope", "image/png"))])
        assert bad.status_code == 422 and "x.png" in bad.json()["detail"]
