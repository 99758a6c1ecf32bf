"""A database outage answers 503 with Retry-After (as /readyz does), never a generic 500, and the API recovers when
the database comes back. Real outages: a SQLite registry whose folder is gone, a PostgreSQL server behind a
loopback TCP relay that is shut and reopened, and a PostgreSQL URL whose port nothing listens on."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.service._live import free_port
from tests.service.api.conftest import imagefolder_zip
from tests.service.conftest import empty_postgres

READS = ["/api/v1/datasets", "/api/v1/datasets/1", "/api/v1/jobs", "/api/v1/jobs/1", "/api/v1/ensembles/1"]


def _use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    from zooens.service.db.session import dispose_engines
    from zooens.settings import get_settings

    dispose_engines()
    monkeypatch.setenv("ZOOENS_DATABASE_URL", url)
    get_settings.cache_clear()


def _token() -> str:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        plain, _ = registry.create_token(s, "outage")
    return plain


def _assert_unavailable(client: TestClient, auth: dict[str, str], hidden: list[str]) -> None:
    from zooens.service.api.errors import DATABASE_UNAVAILABLE_DETAIL, RETRY_AFTER_SECONDS

    answers = [client.get(path) for path in READS]
    answers.append(client.post("/api/v1/jobs", json={"dataset_id": 1}, headers=auth))  # the token look-up fails
    answers.append(client.delete("/api/v1/jobs/1", headers=auth))
    for answer in answers:
        assert answer.status_code == 503, (answer.request.url, answer.text)
        assert answer.json() == {"detail": DATABASE_UNAVAILABLE_DETAIL}
        assert answer.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        assert not any(text in answer.text for text in hidden)
    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 503 and ready.json()["database"] == "unreachable"


def _seed(client: TestClient, auth: dict[str, str]) -> None:
    uploaded = client.post(
        "/api/v1/datasets",
        files={"file": ("d.zip", imagefolder_zip({"a": 3, "b": 3}), "application/zip")},
        headers=auth,
    )
    assert uploaded.status_code == 201, uploaded.text
    for path in READS[:3]:
        assert client.get(path).status_code == 200


def test_sqlite_registry_gone_answers_503_then_recovers(zooens_home: Path, tmp_path: Path, monkeypatch):
    from zooens.service.app import create_app
    from zooens.service.db.session import get_engine, upgrade_to_head

    folder = tmp_path / "registry"
    url = f"sqlite:///{folder / 'registry.db'}"
    _use_database(monkeypatch, url)
    upgrade_to_head(url)
    auth = {"Authorization": f"Bearer {_token()}"}
    with TestClient(create_app()) as client:
        _seed(client, auth)
        folder.rename(tmp_path / "registry-away")
        get_engine(url).dispose()  # the pooled connections still hold the moved file open; new ones cannot open it
        _assert_unavailable(client, auth, [str(folder), "registry.db", "sqlite"])
        (tmp_path / "registry-away").rename(folder)
        assert client.get("/api/v1/datasets").json()["count"] == 1
        assert client.get("/api/v1/readyz").status_code == 200


class _Relay:
    """A loopback TCP relay to the PostgreSQL server that can be shut (every connection cut, nothing listening)
    and opened again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.mark.postgres
def test_postgres_outage_answers_503_then_recovers(zooens_home: Path, postgres_url: str, monkeypatch):
    from zooens.service.app import create_app

    empty_postgres(postgres_url)
    real = make_url(postgres_url)
    relay = _Relay((real.host or "127.0.0.1", real.port or 5432))
    relay.open()
    try:
        url = real.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        _use_database(monkeypatch, url)
        auth = {"Authorization": f"Bearer {_token()}"}
        with TestClient(create_app()) as client:
            _seed(client, auth)
            relay.shut()
            _assert_unavailable(client, auth, [str(relay.port), real.database or "", "psycopg2", "connection"])
            relay.open()
            assert client.get("/api/v1/datasets").json()["count"] == 1
            assert client.get("/api/v1/readyz").status_code == 200
    finally:
        relay.shut()
        _use_database(monkeypatch, postgres_url)


def test_a_database_nothing_listens_for_answers_503(zooens_home: Path, monkeypatch):
    from zooens.service.app import create_app

    _use_database(monkeypatch, f"postgresql+psycopg2://zooens@127.0.0.1:{free_port()}/registry")
    with TestClient(create_app()) as client:
        _assert_unavailable(client, {"Authorization": "Bearer zoo_not-checked-without-a-database"}, ["127.0.0.1"])
