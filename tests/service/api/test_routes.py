"""Every route and every error code, through FastAPI's TestClient on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.service.api.conftest import imagefolder_zip, png_bytes


def _upload(client, auth, data: bytes, filename: str = "d.zip"):
    return client.post("/api/v1/datasets", files={"file": (filename, data, "application/zip")}, headers=auth)


def test_health_and_ready(client):
    assert client.get("/api/v1/healthz").json()["status"] == "ok"
    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


def test_zoo_routes(client):
    page = client.get("/api/v1/zoo", params={"filter": "tf_efficientnet_lite*"}).json()
    names = [m["name"] for m in page["data"]]
    assert "tf_efficientnet_lite0.in1k" in names and page["count"] == len(names)
    embedded = next(m for m in page["data"] if m["name"] == "tf_efficientnet_lite0.in1k")
    assert embedded["weights_present"] and embedded["origin"] == "embedded"
    assert client.get("/api/v1/zoo", params={"available": True}).json()["count"] >= 3
    assert "embedded" in client.get("/api/v1/zoo/sets").json()["sets"]
    one = client.get("/api/v1/zoo/tf_efficientnet_lite0.in1k").json()
    assert one["facts"]["source"]["sha256"]
    missing = client.get("/api/v1/zoo/tf_efficientnet_lite7.nope")
    assert missing.status_code == 404 and "tf_efficientnet_lite" in missing.json()["detail"]


def test_writes_need_a_valid_token(client, token):
    data = imagefolder_zip({"a": 3, "b": 3})
    r = _upload(client, {}, data)
    assert r.status_code == 401 and "zooens tokens create" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert _upload(client, {"Authorization": "Bearer nope"}, data).status_code == 401
    assert client.post("/api/v1/jobs", json={"dataset_id": 1}).status_code == 401


def test_upload_list_show_dataset(client, auth):
    r = _upload(client, auth, imagefolder_zip({"cat": 3, "dog": 4}, prefix="pets/"))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["classes"] == ["cat", "dog"] and ds["counts"]["train"] == {"cat": 3, "dog": 4}
    assert len(ds["fingerprint"]) == 64
    listed = client.get("/api/v1/datasets").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == ds["id"]
    assert client.get(f"/api/v1/datasets/{ds['id']}").json()["name"] == ds["name"]
    assert client.get("/api/v1/datasets/999").status_code == 404


def test_npz_upload(client, auth):
    import numpy as np

    buf = io.BytesIO()
    np.savez(
        buf,
        train_images=np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8),
        train_labels=np.array([0, 0, 1, 1, 2, 2]),
    )
    r = client.post("/api/v1/datasets", files={"file": ("x.npz", buf.getvalue())}, headers=auth)
    assert r.status_code == 201, r.text and r.json()["classes"] == ["0", "1", "2"]


def _state(client, home):
    datasets_dir = home / "datasets"
    return client.get("/api/v1/datasets").json()["count"], sorted(
        p.name for p in datasets_dir.glob("*")
    ) if datasets_dir.exists() else []


def _zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("a/link.png")
    info.external_attr = 0o120777 << 16
    return info


@pytest.mark.parametrize(
    "archive, status, message",
    [
        (_zip_with([("../evil/a.png", png_bytes(0)), ("a/1.png", png_bytes(1))]), 422, ".."),
        (_zip_with([("/etc/a.png", png_bytes(0)), ("a/1.png", png_bytes(1))]), 422, "absolute"),
        (_zip_with([(_symlink_entry(), b"/etc/passwd"), ("a/1.png", png_bytes(1))]), 422, "symbolic link"),
        (imagefolder_zip({"a": 3, "b": 3}, extra={"a/bad.png": b"garbage"}), 422, "bad.png"),
        (b"not a zip", 422, "not a valid zip"),
        (_zip_with([("readme.txt", b"hi")]), 422, "no folders"),
    ],
    ids=["dotdot", "absolute", "symlink", "corrupt-image", "not-zip", "no-folders"],
)
def test_bad_archives_are_refused_and_leave_nothing(client, auth, zooens_home, archive, status, message):
    before = _state(client, zooens_home)
    r = _upload(client, auth, archive)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert _state(client, zooens_home) == before


def test_a_single_example_class_is_the_jobs_call(client, auth, zooens_home):
    """The upload is data (accepted); a job on it is refused unless it says small_classes warn/allow."""
    r = _upload(client, auth, imagefolder_zip({"a": 12, "b": 1}))
    assert r.status_code == 201, r.text
    ds_id = r.json()["id"]
    refused = client.post("/api/v1/jobs", json={"dataset_id": ds_id, "k": 3}, headers=auth)
    assert refused.status_code == 422 and "'b' (1)" in refused.json()["detail"]
    assert "small" in refused.json()["detail"]
    allowed = client.post("/api/v1/jobs", json={"dataset_id": ds_id, "k": 3, "small_classes": "allow"}, headers=auth)
    assert allowed.status_code in (201, 202), allowed.text


def test_size_limits(client, auth, zooens_home, monkeypatch):
    from zooens.settings import get_settings

    before = _state(client, zooens_home)
    monkeypatch.setenv("ZOOENS_MAX_UPLOAD_BYTES", "2000")
    get_settings.cache_clear()
    r = _upload(client, auth, imagefolder_zip({"a": 5, "b": 5}))
    assert r.status_code == 413 and "ZOOENS_MAX_UPLOAD_BYTES" in r.json()["detail"]
    monkeypatch.setenv("ZOOENS_MAX_UPLOAD_BYTES", str(10**8))
    monkeypatch.setenv("ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES", "100000")
    get_settings.cache_clear()
    bomb = _zip_with([("a/1.png", png_bytes(1)), ("a/zeros.png", b"\0" * 200_000)])
    r = _upload(client, auth, bomb)
    assert r.status_code == 413 and "expand" in r.json()["detail"]
    monkeypatch.setenv("ZOOENS_MAX_ARCHIVE_FILES", "3")
    get_settings.cache_clear()
    assert _upload(client, auth, imagefolder_zip({"a": 3, "b": 3})).status_code == 413
    assert _state(client, zooens_home) == before


def test_register_path_only_under_data_roots(client, auth, tmp_path, monkeypatch):
    from zooens.settings import get_settings

    root = tmp_path / "allowed"
    with zipfile.ZipFile(io.BytesIO(imagefolder_zip({"a": 2, "b": 2}))) as zf:
        zf.extractall(root / "ds")
    r = client.post("/api/v1/datasets/register", json={"path": str(root / "ds")}, headers=auth)
    assert r.status_code == 422 and "ZOOENS_DATA_ROOTS" in r.json()["detail"]
    monkeypatch.setenv("ZOOENS_DATA_ROOTS", f'["{root}"]')
    get_settings.cache_clear()
    assert client.post("/api/v1/datasets/register", json={"path": str(root / "ds")}, headers=auth).status_code == 201
    escape = client.post("/api/v1/datasets/register", json={"path": str(root / ".." / "elsewhere")}, headers=auth)
    assert escape.status_code == 422


def test_job_validation_and_conflicts(client, auth):
    ds_id = _upload(client, auth, imagefolder_zip({"a": 8, "b": 8})).json()["id"]
    assert client.post("/api/v1/jobs", json={"dataset_id": 999}, headers=auth).status_code == 404
    bad = client.post("/api/v1/jobs", json={"dataset_id": ds_id, "strategies": ["bogus"]}, headers=auth)
    assert bad.status_code == 422 and "Unknown strategy" in bad.json()["detail"]
    assert client.post("/api/v1/jobs", json={"dataset_id": ds_id, "top_k": 0}, headers=auth).status_code == 422
    unknown_zoo = client.post("/api/v1/jobs", json={"dataset_id": ds_id, "zoo": "nothing-like-this*"}, headers=auth)
    assert unknown_zoo.status_code == 404
    r = client.post("/api/v1/jobs", json={"dataset_id": ds_id, "zoo": "embedded"}, headers=auth)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job_id = r.json()["id"]
    assert client.get(f"/api/v1/jobs/{job_id}").json()["params"]["top_k"] == 3
    assert client.get("/api/v1/jobs", params={"status": "queued"}).json()["count"] == 1
    assert client.get("/api/v1/jobs", params={"status": "weird"}).status_code == 422
    assert client.get(f"/api/v1/jobs/{job_id}/ensemble").status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/ranking").json() == []
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 409 and "already" in again.json()["detail"]
    assert client.get("/api/v1/jobs/12345").status_code == 404
    # found by the fuzz: numbers past the database's integers are refused, not a 500
    assert client.get(f"/api/v1/jobs/{2**63}").status_code == 422
    assert client.get("/api/v1/jobs", params={"offset": 2**63}).status_code == 422
    assert client.post("/api/v1/ensembles/77/predict", files={"files": ("a.png", png_bytes(0))}).status_code == 404


def test_protected_reads(client, auth, monkeypatch):
    from zooens.settings import get_settings

    monkeypatch.setenv("ZOOENS_PROTECT_READS", "true")
    get_settings.cache_clear()
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", headers=auth).status_code == 200
