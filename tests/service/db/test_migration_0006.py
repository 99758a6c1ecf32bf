"""Migration 0006 (calibration) on SQLite and PostgreSQL: its columns come and go, existing rows stay."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, select, text

from zooens.service.db import models
from zooens.service.db.session import (
    alembic_config,
    dispose_engines,
    get_engine,
    head_revision,
    session_scope,
    upgrade_to_head,
)

ENSEMBLE_COLUMNS = {
    "temperature",
    "val_nll",
    "val_brier",
    "val_ece",
    "test_nll",
    "test_brier",
    "test_ece",
    "uncalibrated_val_ece",
    "uncalibrated_test_nll",
    "uncalibrated_test_ece",
    "reliability",
}


def _migrate(url: str, action, revision: str) -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, revision)


def _columns(url: str, table: str) -> set[str]:
    with get_engine(url).connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns(table)}


def test_0006_adds_and_drops_the_calibration_columns(db_url):
    assert int(head_revision()) >= 6
    assert ENSEMBLE_COLUMNS <= _columns(db_url, "ensembles") and "warnings" in _columns(db_url, "jobs")
    _migrate(db_url, command.downgrade, "0005")
    assert not ENSEMBLE_COLUMNS & _columns(db_url, "ensembles") and "warnings" not in _columns(db_url, "jobs")
    with get_engine(db_url).begin() as conn:  # rows written before 0006
        conn.execute(
            text(
                "INSERT INTO datasets (name, source, fingerprint, classes, counts, created_at) "
                "VALUES ('d', 's', 'f', '[]', '{}', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (dataset_id, zoo, zoo_models, params, status, cancel_requested, attempts, "
                "created_at) VALUES (1, 'embedded', '[]', '{}', 'succeeded', false, 0, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ensembles (job_id, val_ce, size, loss_curve, created_at) "
                "VALUES (1, 0.5, 1, '[0.5]', CURRENT_TIMESTAMP)"
            )
        )
    dispose_engines()
    upgrade_to_head(db_url)
    with session_scope(db_url) as s:
        job = s.scalars(select(models.Job)).one()
        ens = s.scalars(select(models.Ensemble)).one()
        assert job.warnings is None and ens.temperature is None and ens.reliability is None and ens.val_ce == 0.5
        job.warnings = ["small val split"]
        ens.temperature, ens.test_ece = 1.7, 0.03
        ens.reliability = {"split": "test", "n_bins": 15, "bins": [[0, None, None]] * 15}
    with session_scope(db_url) as s:
        assert s.scalars(select(models.Job)).one().warnings == ["small val split"]
        ens = s.scalars(select(models.Ensemble)).one()
        assert (ens.temperature, ens.test_ece, ens.reliability["bins"][0]) == (1.7, 0.03, [0, None, None])
    _migrate(db_url, command.downgrade, "0005")
    with get_engine(db_url).connect() as conn:
        assert conn.execute(text("SELECT val_ce FROM ensembles")).scalar() == 0.5
    dispose_engines()
    upgrade_to_head(db_url)
