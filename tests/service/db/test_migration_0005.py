"""0005 adds `knn_scores.knn1_accuracy` (nullable) and takes it away again, keeping the rows, on SQLite and
PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from zooens.service.db.session import alembic_config, current_revision, dispose_engines, get_engine, upgrade_to_head


def _migrate(url: str, action, revision: str) -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, revision)


def _columns(url: str) -> set[str]:
    with get_engine(url).connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns("knn_scores")}


def test_0005_adds_knn1_accuracy_and_removes_it_keeping_the_rows(db_url):
    _migrate(db_url, command.downgrade, "0004")
    assert current_revision(db_url) == "0004" and "knn1_accuracy" not in _columns(db_url)
    with get_engine(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (name, source, fingerprint, classes, counts, created_at) "
                "VALUES ('d', 's', 'f', '[]', '{}', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (dataset_id, zoo, params, status, cancel_requested, attempts, created_at) "
                "VALUES (1, 'z', '{}', 'queued', false, 0, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO knn_scores (job_id, model_name, k, knn_accuracy, created_at) "
                "VALUES (1, 'old.in1k', 10, 0.5, CURRENT_TIMESTAMP)"
            )
        )
    _migrate(db_url, command.upgrade, "0005")
    assert current_revision(db_url) == "0005" and "knn1_accuracy" in _columns(db_url)
    with get_engine(db_url).begin() as conn:
        assert conn.execute(text("SELECT model_name, k, knn_accuracy, knn1_accuracy FROM knn_scores")).all() == [
            ("old.in1k", 10, 0.5, None)  # written before 0005: no kNN@1
        ]
        conn.execute(
            text(
                "INSERT INTO knn_scores (job_id, model_name, k, knn_accuracy, knn1_accuracy, created_at) "
                "VALUES (1, 'new.in1k', 1, 0.75, 0.75, CURRENT_TIMESTAMP)"
            )
        )
    _migrate(db_url, command.downgrade, "0004")
    assert current_revision(db_url) == "0004" and "knn1_accuracy" not in _columns(db_url)
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(text("SELECT model_name, k, knn_accuracy FROM knn_scores ORDER BY id")).all()
    assert rows == [("old.in1k", 10, 0.5), ("new.in1k", 1, 0.75)]
    dispose_engines()
    upgrade_to_head(db_url)
    assert "knn1_accuracy" in _columns(db_url)
