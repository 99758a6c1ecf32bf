"""The API keeps its OpenAPI contract: Schemathesis against a real `zooens serve` on 127.0.0.1, on SQLite and
PostgreSQL, on a registry seeded with jobs in every state a reader meets: two finished jobs and their ensembles
(real tiny jobs, one over two models), a failed, a cancelled and a queued one.

Schemathesis' own runner (`st run`) generates requests from /openapi.json and checks every answer: no 5xx, the
status is documented, the body matches the documented schema, the content type and headers are those documented,
an undocumented method answers 405 with an `Allow` header naming the documented ones, invalid data is refused,
auth is not ignored. Left out: `positive_data_acceptance`, which counts as a failure any refusal of a request the
schema allows; many refusals are of content no schema can express (a zip that is no dataset, a path outside the
data roots, a strategy's own options), and they are 4xx answers whose bodies and statuses are still checked.

The same seeded registry also serves the tests that need a stored ensemble: `GET /ensembles/{id}` (it answered
500 for every stored ensemble) and `curl -OJ` on the export route.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import zooens
from tests.service._live import start_server, stop_server
from tests.service._tiny import fit_tiny, register_tiny_zoo
from tests.service.conftest import empty_postgres
from zooens.ensemble import read_bundle

pytest.importorskip("schemathesis")

ST = str(Path(sys.executable).parent / "st")
EXAMPLES_PER_OPERATION = 5
CHECKS_LEFT_OUT = "positive_data_acceptance"


@dataclass
class Seeded:
    url: str
    token: str
    job_id: int
    ensemble_id: int
    home: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A live server on a registry holding a finished tiny job with its ensemble, a dataset and a token."""
    from zooens.service import registry
    from zooens.service.db.session import dispose_engines, session_scope, upgrade_to_head
    from zooens.settings import get_settings

    home = tmp_path_factory.mktemp(f"contract-{request.param}") / "home"
    home.mkdir()
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOOENS_HOME", str(home))
        mp.setenv("ZOOENS_DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            upgrade_to_head(url)
            register_tiny_zoo(home / "weights", ["tiny-resnet", "tiny-effnet"])
            fitted = fit_tiny(zoo="tiny-resnet")
            fit_tiny(top_k=2)  # a second finished job, its ensemble chosen among two models' runs
            with session_scope() as s:
                token, _ = registry.create_token(s, f"contract-{uuid.uuid4().hex[:6]}")
                done = registry.get_job(s, fitted.job_id)
                for end in ("failed", "cancelled", "queued"):  # the other states a job can be read in
                    job = registry.create_job(
                        s, dataset_id=done.dataset_id, zoo=done.zoo, zoo_models=done.zoo_models, params=done.params
                    )
                    if end == "failed":
                        registry.set_job_status(s, job.id, "failed", error="seeded: a unit failed")
                    elif end == "cancelled":
                        registry.request_cancel(s, job.id)
            dispose_engines()
            proc, server = start_server(home, url)
            try:
                yield Seeded(server, token, fitted.job_id, fitted.ensemble_id, home)
            finally:
                stop_server(proc)
        finally:
            dispose_engines()
            get_settings.cache_clear()


@pytest.mark.slow
def test_a_stored_ensemble_reads_through_its_route(seeded):
    shown = httpx.get(f"{seeded.url}/api/v1/ensembles/{seeded.ensemble_id}", timeout=30)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["id"] == seeded.ensemble_id and body["job_id"] == seeded.job_id
    assert body["members"] and abs(sum(m["weight"] for m in body["members"]) - 1.0) < 1e-6
    assert body == httpx.get(f"{seeded.url}/api/v1/jobs/{seeded.job_id}/ensemble", timeout=30).json()
    missing = httpx.get(f"{seeded.url}/api/v1/ensembles/{seeded.ensemble_id + 1000}", timeout=30)
    assert missing.status_code == 404 and "No ensemble" in missing.json()["detail"]


@pytest.mark.slow
def test_curl_saves_the_export_under_its_zooens_name(seeded, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [curl, "-sS", "-f", "-OJ", f"{seeded.url}/api/v1/ensembles/{seeded.ensemble_id}/export"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    saved = tmp_path / f"ensemble-{seeded.ensemble_id}.zooens"
    assert [p.name for p in tmp_path.iterdir()] == [saved.name]
    assert read_bundle(saved).metadata["ensemble_id"] == seeded.ensemble_id
    assert zooens.load(str(saved)).classes == [str(d) for d in range(10)]


@pytest.mark.slow
def test_schemathesis_finds_no_contract_failure(seeded, tmp_path):
    """Runs last on each registry: its writes (deletes included) change what the others read."""
    done = subprocess.run(
        [
            ST,
            "run",
            f"{seeded.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {seeded.token}",
            "--checks",
            "all",
            "--exclude-checks",
            CHECKS_LEFT_OUT,
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--seed",
            "0",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    selected = re.search(r"Operations:\s+(\d+) selected", output)
    assert selected is not None and int(selected.group(1)) >= 20, output[-3000:]  # the whole API, not an empty schema
    assert done.returncode == 0, output[-12000:]
    assert " failed" not in output.split("SUMMARY")[-1], output[-6000:]
