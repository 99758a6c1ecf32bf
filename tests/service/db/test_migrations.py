"""The migrations build exactly the models' schema, on SQLite and PostgreSQL, both ways, keeping the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from zooens.service.db import models
from zooens.service.db.session import (
    alembic_config,
    current_revision,
    dispose_engines,
    downgrade_to_base,
    get_engine,
    head_revision,
    is_at_head,
    migrations_dir,
    session_scope,
    table_names,
    upgrade_to_head,
)

REPO = Path(__file__).resolve().parents[3]
TABLES = {
    "zoo_models",
    "datasets",
    "jobs",
    "job_units",
    "embeddings",
    "knn_scores",
    "finetune_runs",
    "ensembles",
    "ensemble_members",
    "api_tokens",
    "workers",
}


def _diff(url: str) -> list:
    with get_engine(url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, models.Base.metadata)


def test_head_has_every_table_and_no_diff_with_the_models(db_url):
    assert set(models.Base.metadata.tables) == TABLES
    assert TABLES | {"alembic_version"} == set(table_names(db_url))
    assert current_revision(db_url) == head_revision() and is_at_head(db_url)
    assert _diff(db_url) == []


def test_downgrade_to_base_then_up_again(db_url):
    downgrade_to_base(db_url)
    assert set(table_names(db_url)) <= {"alembic_version"}
    assert current_revision(db_url) is None and not is_at_head(db_url)
    upgrade_to_head(db_url)
    assert TABLES <= set(table_names(db_url)) and _diff(db_url) == []


def test_upgrade_is_idempotent(db_url):
    dispose_engines()  # forget that this process already upgraded it
    upgrade_to_head(db_url)
    upgrade_to_head(db_url)
    assert is_at_head(db_url)


def test_foreign_keys_cascade_as_declared(db_url):
    fks = {
        (t, fk["referred_table"]): fk["options"].get("ondelete")
        for t in TABLES
        for fk in inspect(get_engine(db_url)).get_foreign_keys(t)
    }
    assert fks == {
        ("jobs", "datasets"): "CASCADE",
        ("job_units", "jobs"): "CASCADE",
        ("knn_scores", "jobs"): "CASCADE",
        ("finetune_runs", "jobs"): "CASCADE",
        ("ensembles", "jobs"): "CASCADE",
        ("ensemble_members", "ensembles"): "CASCADE",
        ("ensemble_members", "finetune_runs"): "CASCADE",
    }


@pytest.mark.parametrize("table, status", [("jobs", "exploded"), ("job_units", "finished")])
def test_status_columns_refuse_unknown_values(db_url, table, status):
    with get_engine(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (name, source, fingerprint, classes, counts, created_at) "
                "VALUES ('d', 's', 'f', '[]', '{}', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (dataset_id, zoo, params, status, cancel_requested, attempts, "
                "created_at) VALUES (1, 'z', '{}', 'queued', false, 0, CURRENT_TIMESTAMP)"
            )
        )
    sql = {
        "jobs": "UPDATE jobs SET status = :s",
        "job_units": "INSERT INTO job_units (job_id, key, kind, position, status, attempts) "
        "VALUES (1, 'k', 'embed', 0, :s, 0)",
    }[table]
    with pytest.raises(IntegrityError):
        with get_engine(db_url).begin() as conn:
            conn.execute(text(sql), {"s": status})


def test_migrations_are_found_through_the_package():
    assert migrations_dir() == REPO / "migrations"
    assert (migrations_dir() / "versions").is_dir()


def test_alembic_command_line_uses_the_repository_ini(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "ZOOENS_DATABASE_URL": url}
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert current_revision(url) == head_revision()
    assert TABLES <= set(table_names(url))
    dispose_engines()


def _migrate(url: str, action, revision: str) -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, revision)


def test_0002_moves_the_resolved_zoo_out_of_params_and_back(db_url):
    """An old-layout job (zoo names in params['_zoo_models']) gets them in `zoo_models`; its units survive."""
    downgrade_to_base(db_url)
    _migrate(db_url, command.upgrade, "0001")
    with get_engine(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (name, source, fingerprint, classes, counts, created_at) "
                "VALUES ('d', 's', 'f', '[]', '{}', CURRENT_TIMESTAMP)"
            )
        )
        for zoo_spec, params in (
            ("embedded", '{"top_k": 2, "_zoo_models": ["a.in1k", "b.in1k"]}'),
            ("c.in1k", '{"top_k": 1}'),
        ):
            conn.execute(
                text(
                    "INSERT INTO jobs (dataset_id, zoo_spec, params, status, cancel_requested, "
                    "attempts, created_at) VALUES (1, :z, :p, 'queued', false, 0, CURRENT_TIMESTAMP)"
                ),
                {"z": zoo_spec, "p": params},
            )
        conn.execute(
            text(
                "INSERT INTO job_units (job_id, key, kind, position, status, attempts) "
                "VALUES (1, 'embed:a.in1k', 'embed', 0, 'pending', 0)"
            )
        )
    upgrade_to_head(db_url)
    assert _diff(db_url) == []
    with session_scope(db_url) as s:
        old, plain = s.scalars(select(models.Job).order_by(models.Job.id)).all()
        assert (old.zoo, old.zoo_models, old.params) == ("embedded", ["a.in1k", "b.in1k"], {"top_k": 2})
        assert (plain.zoo, plain.zoo_models, plain.params) == ("c.in1k", [], {"top_k": 1})
        assert [u.key for u in s.scalars(select(models.JobUnit))] == ["embed:a.in1k"]
    _migrate(db_url, command.downgrade, "0001")
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(text("SELECT zoo_spec, params FROM jobs ORDER BY id")).all()
        assert "zoo_models" not in {c["name"] for c in inspect(conn).get_columns("jobs")}
        assert conn.execute(text("SELECT count(*) FROM job_units")).scalar() == 1
    assert [(z, json.loads(p) if isinstance(p, str) else p) for z, p in rows] == [
        ("embedded", {"top_k": 2, "_zoo_models": ["a.in1k", "b.in1k"]}),
        ("c.in1k", {"top_k": 1}),
    ]
    dispose_engines()
    upgrade_to_head(db_url)
