"""Error answers keep their documented form (SQLite and PostgreSQL): JSON `{"detail": sentence}`, with `errors`
for a request the schema refused; never a value JSON cannot hold (NaN); 405 with the path's real methods in
`Allow`; and register refusals that do not name the server's folders."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest

from tests.service.api.conftest import imagefolder_zip

REGISTER = "/api/v1/datasets/register"


def _strict_json(response) -> dict:
    """The body, parsed as strict JSON (Python's json accepts NaN; JSON itself does not)."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(response.content, parse_constant=refuse)


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataset_id": 1, "max_gflops": NaN}',
        b'{"dataset_id": 1, "max_latency_ms": Infinity}',
        b'{"dataset_id": NaN}',
        b'{"dataset_id": 1, "lr": -Infinity, "top_k": NaN}',
    ],
)
def test_non_finite_numbers_are_refused_with_a_json_body(client, auth, body):
    response = client.post("/api/v1/jobs", content=body, headers={**auth, "content-type": "application/json"})
    assert response.status_code == 422, response.text
    answer = _strict_json(response)
    assert isinstance(answer["detail"], str) and answer["detail"].startswith("The request is invalid")
    assert answer["errors"] and all(e["loc"][0] == "body" and e["msg"] and e["type"] for e in answer["errors"])
    assert set(answer["errors"][0]) == {"loc", "msg", "type"}  # the value sent is never echoed


def test_a_schema_refusal_names_each_problem_readably(client):
    response = client.get("/api/v1/jobs", params={"limit": "many", "status": "sleeping"})
    assert response.status_code == 422
    answer = _strict_json(response)
    assert "query.limit" in answer["detail"] and "query.status" in answer["detail"]
    assert sorted(e["loc"][1] for e in answer["errors"]) == ["limit", "status"]
    # a domain check's refusal keeps its own sentence, in the same form
    zoo = client.get("/api/v1/zoo", params={"upstream": "martian"})
    assert zoo.status_code == 422 and "Unknown upstream category" in zoo.json()["detail"]


def test_a_post_only_path_answers_405_with_its_methods(client, auth):
    get = client.get(REGISTER)
    assert get.status_code == 405, get.text  # not 422 from /datasets/{dataset_id}
    assert get.headers["allow"] == "POST, OPTIONS"
    assert "use POST" in get.json()["detail"]
    put = client.put(REGISTER, headers=auth, json={})
    assert put.status_code == 405 and put.headers["allow"] == "POST, OPTIONS"
    # a malformed id on a path that has that method is still a 422
    assert client.get("/api/v1/datasets/abc").status_code == 422


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/v1/datasets/7", "GET, DELETE, OPTIONS"),
        ("/api/v1/datasets", "GET, POST, OPTIONS"),
        ("/api/v1/datasets/register", "POST, OPTIONS"),
        ("/api/v1/jobs/3/cancel", "POST, OPTIONS"),
        ("/api/v1/ensembles/2/predict", "POST, OPTIONS"),
        ("/api/v1/healthz", "GET, OPTIONS"),
    ],
)
def test_options_and_405_list_the_real_methods(client, auth, path, allow):
    options = client.options(path)
    assert options.status_code == 204 and options.headers["allow"] == allow
    allowed = set(allow.split(", "))
    wrong = next(m for m in ("PATCH", "PUT") if m not in allowed)
    refused = client.request(wrong, path, headers=auth)
    assert refused.status_code == 405 and refused.headers["allow"] == allow
    assert wrong in refused.json()["detail"]


def test_unknown_paths_stay_404(client):
    assert client.options("/api/v1/nothing-here").status_code == 404
    assert client.get("/api/v1/nothing-here").json() == {"detail": "Not Found"}


def _server_paths(*roots) -> list[str]:
    return [str(p) for r in roots for p in (r, os.path.realpath(r))]


def test_register_refusals_do_not_name_the_data_roots(client, auth, tmp_path, monkeypatch):
    from zooens.settings import get_settings

    secret = tmp_path / "srv" / "private-data-root"
    with zipfile.ZipFile(io.BytesIO(imagefolder_zip({"a": 2, "b": 2}))) as zf:
        zf.extractall(secret / "ds")
    (secret.parent / "link-root").symlink_to(secret, target_is_directory=True)

    none_configured = client.post(REGISTER, json={"path": "/etc"}, headers=auth)
    assert none_configured.status_code == 422
    assert "ZOOENS_DATA_ROOTS" in none_configured.json()["detail"]

    monkeypatch.setenv("ZOOENS_DATA_ROOTS", json.dumps([str(secret.parent / "link-root"), str(tmp_path / "other")]))
    get_settings.cache_clear()
    for path in ["/etc", "relative/ds", str(tmp_path / "elsewhere"), "../../ds", "/"]:
        refused = client.post(REGISTER, json={"path": path}, headers=auth)
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "not under an allowed data root" in detail and "operator" in detail
        for shown in _server_paths(secret, secret.parent / "link-root", tmp_path / "other"):
            assert shown not in detail, detail
    accepted = client.post(REGISTER, json={"path": str(secret.parent / "link-root" / "ds")}, headers=auth)
    assert accepted.status_code == 201, accepted.text
    assert str(secret) not in accepted.text  # the public row never holds a server path
    again = client.post(REGISTER, json={"path": str(secret.parent / "link-root" / "ds")}, headers=auth)
    assert again.status_code == 201 and again.json() == accepted.json()  # the same dataset
