"""Resume, retry and delete over HTTP, and uploads that repeat content (SQLite and PostgreSQL)."""

from __future__ import annotations

from tests.service._tiny import register_tiny_zoo
from tests.service.api.conftest import imagefolder_zip

JOBS = "/api/v1/jobs"
DATASETS = "/api/v1/datasets"


def _upload(client, auth, data: bytes, filename: str = "d.zip"):
    return client.post(DATASETS, files={"file": (filename, data, "application/zip")}, headers=auth)


def _stored(home) -> list[str]:
    """Stored uploads and staging folders under the uploads folder."""
    root = home / "datasets"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_the_same_content_uploaded_twice_is_the_same_dataset(client, auth, zooens_home):
    data = imagefolder_zip({"cat": 3, "dog": 4})
    first = _upload(client, auth, data, "pets.zip")
    assert first.status_code == 201, first.text
    stored = _stored(zooens_home)
    again = _upload(client, auth, data, "pets-copy.zip")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()  # the existing row, its name included
    assert _stored(zooens_home) == stored  # the second copy's staged files are gone
    assert client.get(DATASETS).json()["count"] == 1
    other = _upload(client, auth, imagefolder_zip({"cat": 3, "dog": 5}), "pets.zip")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_resume_retry_and_delete_over_http(client, auth, zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    ds = _upload(client, auth, imagefolder_zip({"a": 8, "b": 8})).json()
    job = client.post(JOBS, json={"dataset_id": ds["id"], "zoo": "user", "k": 3}, headers=auth).json()
    job_id = job["id"]
    for method, path in [
        ("post", f"{JOBS}/{job_id}/resume"),
        ("post", f"{JOBS}/{job_id}/retry"),
        ("delete", f"{JOBS}/{job_id}"),
        ("delete", f"{DATASETS}/{ds['id']}"),
    ]:
        assert getattr(client, method)(path).status_code == 401  # writes need a token
    for method, path in [
        ("post", f"{JOBS}/4242/resume"),
        ("post", f"{JOBS}/4242/retry"),
        ("delete", f"{JOBS}/4242"),
        ("delete", f"{DATASETS}/4242"),
    ]:
        assert getattr(client, method)(path, headers=auth).status_code == 404

    queued = client.post(f"{JOBS}/{job_id}/resume", headers=auth)
    assert queued.status_code == 409 and "only a failed or cancelled job" in queued.json()["detail"]
    assert client.delete(f"{JOBS}/{job_id}", headers=auth).status_code == 409
    assert client.post(f"{JOBS}/{job_id}/retry", headers=auth).status_code == 409
    busy = client.delete(f"{DATASETS}/{ds['id']}", headers=auth)
    assert busy.status_code == 409 and "cancel them first" in busy.json()["detail"]

    assert client.post(f"{JOBS}/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
    resumed = client.post(f"{JOBS}/{job_id}/resume", headers=auth)
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["status"] == "queued" and resumed.json()["error"] is None  # the API never runs it
    assert client.post(f"{JOBS}/{job_id}/cancel", headers=auth).status_code == 202

    retried = client.post(f"{JOBS}/{job_id}/retry", headers=auth)
    assert retried.status_code == 201, retried.text
    new = retried.json()
    assert new["id"] != job_id and new["status"] == "queued"
    assert (new["dataset_id"], new["zoo"], new["params"]) == (
        ds["id"],
        "user",
        client.get(f"{JOBS}/{job_id}").json()["params"],
    )
    assert client.post(f"{JOBS}/{new['id']}/cancel", headers=auth).status_code == 202

    deleted = client.delete(f"{JOBS}/{job_id}", headers=auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"{JOBS}/{job_id}").status_code == 404
    assert client.get(JOBS).json()["count"] == 1

    stored = zooens_home / "datasets"
    thumbs = zooens_home / "thumbnails" / ds["fingerprint"]
    assert len(_stored(zooens_home)) == 1 and thumbs.is_dir()
    finished = client.delete(f"{DATASETS}/{ds['id']}", headers=auth)
    assert finished.status_code == 409 and "with_jobs=true" in finished.json()["detail"]
    gone = client.delete(f"{DATASETS}/{ds['id']}", params={"with_jobs": "true"}, headers=auth)
    assert gone.status_code == 204, gone.text
    assert client.get(f"{DATASETS}/{ds['id']}").status_code == 404
    assert client.get(f"{JOBS}/{new['id']}").status_code == 404
    assert list(stored.iterdir()) == [] and not thumbs.exists()


def test_a_registered_path_keeps_its_files_when_its_dataset_is_deleted(client, auth, tmp_path, monkeypatch):
    import io
    import zipfile

    from zooens.settings import get_settings

    root = tmp_path / "roots"
    zipfile.ZipFile(io.BytesIO(imagefolder_zip({"a": 3, "b": 3}, prefix="ds/"))).extractall(root)
    monkeypatch.setenv("ZOOENS_DATA_ROOTS", f'["{root}"]')
    get_settings.cache_clear()
    row = client.post(f"{DATASETS}/register", json={"path": str(root / "ds")}, headers=auth)
    assert row.status_code == 201, row.text
    assert client.delete(f"{DATASETS}/{row.json()['id']}", headers=auth).status_code == 204
    assert sorted(p.name for p in (root / "ds").iterdir()) == ["a", "b"]  # the server's own data is untouched
