"""GET /api/v1/ensembles/{id} reads a stored ensemble (it once answered 500 for every one), fast, through FastAPI's
TestClient on SQLite and PostgreSQL (`db_url`, by way of the `client` fixture).

Each answer is checked against the contract: the body against the schema /openapi.json documents for the
status (jsonschema) and against the route's response model; the same ensemble read by its job
(GET /jobs/{id}/ensemble) is the same body; an unknown id answers 404 with the documented `Message` body.
`tests/service/api/test_contract.py` checks the same over a real server (slow).
"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.service._tiny import fit_tiny, register_tiny_zoo
from zooens.pipeline.records import EnsembleMemberRecord, EnsembleRecord, RunRecord
from zooens.service.api.schemas import EnsemblePublic

ROUTE = "/api/v1/ensembles/{ensemble_id}"


def _check_documented(client, path: str, status: int, body: Any) -> None:
    """`body` matches the schema the OpenAPI document gives GET `path` for `status` (JSON)."""
    spec = client.get("/openapi.json").json()
    schema = spec["paths"][path]["get"]["responses"][str(status)]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": spec["components"]})
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert problems == [], f"GET {path} {status} does not match its documented schema: {problems}"


def _read(client, ensemble_id: int, job_id: int) -> dict[str, Any]:
    """GET /ensembles/{id}: 200, documented, valid, that ensemble of that job."""
    shown = client.get(f"/api/v1/ensembles/{ensemble_id}")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    _check_documented(client, ROUTE, 200, body)
    assert EnsemblePublic.model_validate(body).model_dump(mode="json") == body
    assert (body["id"], body["job_id"]) == (ensemble_id, job_id)
    assert body["members"] and abs(sum(m["weight"] for m in body["members"]) - 1.0) < 1e-6
    return body


def _check_unknown(client, ensemble_id: int) -> None:
    missing = client.get(f"/api/v1/ensembles/{ensemble_id}")
    assert missing.status_code == 404, missing.text
    _check_documented(client, ROUTE, 404, missing.json())
    assert "No ensemble with id" in missing.json()["detail"]


def _run(s, job_id: int, key: str, model_name: str, **over) -> int:
    from zooens.service import registry

    fields = dict(
        model_name=model_name,
        strategy="linear",
        hparams={"lr": 0.1, "steps": 10},
        val_ce=0.4,
        val_acc=0.88,
        test_acc=0.86,
        seconds=1.5,
        updated_params=650,
        update_bytes=2600,
        gflops=0.12,
        params_count=120_000,
        latency_ms=3.2,
        backbone_key=model_name,
        calibration={"temperature": 1.3, "val_nll": 0.38, "val_ece": 0.04, "uncalibrated_val_ece": 0.07},
        artifact_path=f"/artifacts/{key}",
        probs_path=f"/artifacts/{key}/probs.npz",
    )
    return registry.add_finetune_run(s, job_id, RunRecord(unit_key=key, **{**fields, **over})).id


def _ensemble(members: list[tuple[str, float]], **over) -> EnsembleRecord:
    """An ensemble record with every column filled, as the ensemble stage records one (`over` replaces some)."""
    point = {"members": [k for k, _ in members], "cost": 0.24, "val_ce": 0.3, "test_acc": 0.9}
    fields = dict(
        val_ce=0.3,
        val_acc=0.9,
        test_acc=0.9,
        size=len(members),
        loss_curve=[0.4, 0.3],
        max_gflops=1.0,
        max_latency_ms=50.0,
        gflops=0.24,
        latency_ms=6.4,
        front={"metric": "gflops", "path": [point], "front": [point]},
        temperature=1.2,
        val_nll=0.29,
        val_brier=0.12,
        val_ece=0.03,
        test_nll=0.31,
        test_brier=0.13,
        test_ece=0.04,
        uncalibrated_val_ece=0.06,
        uncalibrated_test_nll=0.35,
        uncalibrated_test_ece=0.07,
        reliability={"split": "test", "n_bins": 2, "bins": [[3, 0.4, 0.33], [17, 0.9, 0.94]]},
        warnings=[],
    )
    return EnsembleRecord(
        members=[EnsembleMemberRecord(unit_key=k, weight=w) for k, w in members],
        selected=[k for k, _ in members],
        **{**fields, **over},
    )


def test_stored_ensembles_read_by_id(client):
    """Rows written through the registry: a job with an older, bare ensemble (no cost, calibration or front) and
    its latest, full one; each id reads its own ensemble (the route once built the job's latest one, and failed)."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        ds = registry.get_or_create_dataset(
            s, name="d", source="/data/d", fingerprint="f" * 64, classes=["a", "b"], counts={"train": {"a": 2, "b": 2}}
        )
        job_id = registry.create_job(
            s, dataset_id=ds.id, zoo="embedded", zoo_models=["m1", "m2"], params={"top_k": 2}
        ).id
        run_ids = {f"finetune:{m}": _run(s, job_id, f"finetune:{m}", m) for m in ("m1", "m2")}
        bare = EnsembleRecord(
            members=[EnsembleMemberRecord(unit_key="finetune:m1", weight=1.0)],
            selected=["finetune:m1"],
            val_ce=0.4,
            size=1,
            loss_curve=[0.4],
        )
        older = registry.create_ensemble(s, job_id, bare).id
        latest = registry.create_ensemble(s, job_id, _ensemble([("finetune:m2", 0.75), ("finetune:m1", 0.25)])).id
        registry.set_job_status(s, job_id, "succeeded")

    first = _read(client, older, job_id)
    assert [(m["run_id"], m["weight"]) for m in first["members"]] == [(run_ids["finetune:m1"], 1.0)]
    assert first["front"] is None and first["temperature"] is None

    body = _read(client, latest, job_id)
    assert [(m["run_id"], m["model_name"], m["weight"]) for m in body["members"]] == [
        (run_ids["finetune:m2"], "m2", 0.75),
        (run_ids["finetune:m1"], "m1", 0.25),
    ]
    assert body["members"][0]["calibration"]["temperature"] == 1.3
    assert body["front"]["metric"] == "gflops" and body["reliability"]["n_bins"] == 2 and body["temperature"] == 1.2
    assert body == client.get(f"/api/v1/jobs/{job_id}/ensemble").json()
    _check_unknown(client, latest + 1000)


def test_a_real_tiny_jobs_ensemble_reads_by_id(client):
    """The ensemble a real job records (the smallest one: a tiny random model on digits, a few seconds)."""
    from zooens.settings import get_settings

    register_tiny_zoo(get_settings().home / "weights", ["tiny-resnet"])
    fitted = fit_tiny()
    body = _read(client, fitted.ensemble_id, fitted.job_id)
    assert body == client.get(f"/api/v1/jobs/{fitted.job_id}/ensemble").json()
    _check_unknown(client, fitted.ensemble_id + 1000)


@pytest.mark.parametrize("ensemble_id", [0, -1, 2**63])
def test_ids_no_ensemble_can_have_are_refused_not_a_500(client, ensemble_id):
    answer = client.get(f"/api/v1/ensembles/{ensemble_id}")
    assert answer.status_code == 422, answer.text
    _check_documented(client, ROUTE, 422, answer.json())
