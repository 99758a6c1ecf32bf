"""Ids are never given twice, on SQLite and PostgreSQL: a deleted job's, dataset's, run's or ensemble's id
never names another one (old links and commands would show the wrong thing). Migration 0008 gives
existing SQLite registries `AUTOINCREMENT` without losing a row."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from zooens.pipeline.records import EnsembleMemberRecord, EnsembleRecord, RunRecord
from zooens.service import registry
from zooens.service.db.session import alembic_config, dispose_engines, get_engine, session_scope, upgrade_to_head

AUTOINCREMENT = ("datasets", "jobs", "finetune_runs", "ensembles", "api_tokens")


def _dataset(s, name: str):
    return registry.create_dataset(
        s, name=name, source=f"/data/{name}", fingerprint=name * 64, classes=["a", "b"], counts={}
    )


def _finished_job(s, dataset_id: int) -> int:
    """A succeeded job with one run and an ensemble of it; its id."""
    job = registry.create_job(s, dataset_id=dataset_id, zoo="embedded", zoo_models=["m"], params={})
    run = RunRecord(
        unit_key="finetune:m",
        model_name="m",
        strategy="linear",
        hparams={},
        val_ce=0.3,
        val_acc=0.9,
        seconds=1.0,
        updated_params=1,
        update_bytes=4,
        artifact_path="/a",
        probs_path="/p",
    )
    registry.add_finetune_run(s, job.id, run)
    ensemble = EnsembleRecord(
        members=[EnsembleMemberRecord(unit_key="finetune:m", weight=1.0)],
        selected=["finetune:m"],
        val_ce=0.3,
        size=1,
        loss_curve=[0.3],
    )
    registry.create_ensemble(s, job.id, ensemble)
    registry.set_job_status(s, job.id, "succeeded")
    return job.id


def _ids(s, job_id: int) -> tuple[int, int, int]:
    """(job, run, ensemble) ids of a job."""
    run = registry.list_finetune_runs(s, job_id)[0]
    return job_id, run.id, registry.get_job_ensemble(s, job_id).id


def test_a_deleted_jobs_ids_are_never_given_again(db_url):
    with session_scope() as s:
        ds = _dataset(s, "d")
        first = _ids(s, _finished_job(s, ds.id))
    with session_scope() as s:
        registry.delete_job(s, first[0])  # the newest job, run and ensemble: SQLite gave their ids again
    with session_scope() as s:
        second = _ids(s, _finished_job(s, ds.id))
    assert all(b > a for a, b in zip(first, second, strict=True)), (first, second)


def test_a_deleted_datasets_id_is_never_given_again(db_url):
    with session_scope() as s:
        first = _dataset(s, "d").id
    with session_scope() as s:
        registry.delete_dataset(s, first)
    with session_scope() as s:
        assert _dataset(s, "e").id > first


def test_sqlite_tables_use_autoincrement(zooens_home):
    url = f"sqlite:///{zooens_home / 'ids.db'}"
    upgrade_to_head(url)
    with get_engine(url).connect() as conn:
        for table in AUTOINCREMENT:
            sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar_one()
            assert "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" in sql, sql
    dispose_engines()


def _migrate(url: str, action, revision: str) -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, revision)


def _insert_rows(url: str) -> None:
    """Two datasets, jobs 1..3 with units, scores, runs and ensembles; job 3 (the newest) deleted."""
    with get_engine(url).begin() as conn:
        for name in ("a", "b"):
            conn.execute(
                text(
                    "INSERT INTO datasets (name, source, fingerprint, classes, counts, created_at) "
                    "VALUES (:n, :n, :n, '[]', '{}', CURRENT_TIMESTAMP)"
                ),
                {"n": name},
            )
        for job_id in (1, 2, 3):
            conn.execute(
                text(
                    "INSERT INTO jobs (dataset_id, zoo, zoo_models, params, status, cancel_requested, attempts, "
                    "created_at) VALUES (1, 'embedded', '[]', '{}', 'succeeded', false, 0, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO job_units (job_id, key, kind, position, status, attempts) "
                    "VALUES (:j, 'embed:m', 'embed', 0, 'done', 0)"
                ),
                {"j": job_id},
            )
            conn.execute(
                text(
                    "INSERT INTO knn_scores (job_id, model_name, knn_accuracy, created_at) "
                    "VALUES (:j, 'm', 0.5, CURRENT_TIMESTAMP)"
                ),
                {"j": job_id},
            )
            conn.execute(
                text(
                    "INSERT INTO finetune_runs (job_id, unit_key, model_name, strategy, hparams, seed, val_ce, "
                    "val_acc, seconds, updated_params, update_bytes, artifact_path, probs_path, created_at) "
                    "VALUES (:j, 'finetune:m', 'm', 'linear', '{}', 0, 0.3, 0.9, 1.0, 1, 4, '/a', '/p', "
                    "CURRENT_TIMESTAMP)"
                ),
                {"j": job_id},
            )
            conn.execute(
                text(
                    "INSERT INTO ensembles (job_id, val_ce, size, loss_curve, created_at) "
                    "VALUES (:j, 0.3, 1, '[0.3]', CURRENT_TIMESTAMP)"
                ),
                {"j": job_id},
            )
            conn.execute(
                text("INSERT INTO ensemble_members (ensemble_id, run_id, weight, position) VALUES (:j, :j, 1.0, 0)"),
                {"j": job_id},
            )
        conn.execute(text("DELETE FROM jobs WHERE id = 3"))


COUNTS = {
    "datasets": 2,
    "jobs": 2,
    "job_units": 2,
    "knn_scores": 2,
    "finetune_runs": 2,
    "ensembles": 2,
    "ensemble_members": 2,
}


def _counts(url: str) -> dict[str, int]:
    with get_engine(url).connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in COUNTS}


def test_0008_keeps_every_row_and_both_ways(zooens_home):
    """With foreign keys enforced (as the registry's engine has them), rebuilding `jobs` must not cascade."""
    url = f"sqlite:///{zooens_home / 'old.db'}"
    upgrade_to_head(url)
    _migrate(url, command.downgrade, "0007")
    _insert_rows(url)
    with get_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    dispose_engines()
    upgrade_to_head(url)
    assert _counts(url) == COUNTS
    with get_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        assert not conn.execute(text("SELECT name FROM sqlite_master WHERE name LIKE '_0008%'")).all()
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))}
        assert {"ix_jobs_status_created", "ix_jobs_dataset_id", "ix_job_units_job_status"} <= names
    with session_scope(url) as s:
        job_id = _finished_job(s, 2)
        assert job_id == 3  # the ids freed before 0008 cannot be known: it starts after the largest left
        registry.delete_job(s, job_id)
    with session_scope(url) as s:
        assert _finished_job(s, 2) == 4
    with session_scope(url) as s:  # the cascade still works on the rebuilt tables
        registry.delete_job(s, 4)
        registry.delete_job(s, 2)
    assert _counts(url) == {**COUNTS, **{t: 1 for t in COUNTS if t != "datasets"}}
    _migrate(url, command.downgrade, "0007")
    with get_engine(url).connect() as conn:
        for table in AUTOINCREMENT:
            sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar_one()
            assert "AUTOINCREMENT" not in sql and "PRIMARY KEY (id)" in sql, sql
    assert _counts(url) == {**COUNTS, **{t: 1 for t in COUNTS if t != "datasets"}}
    dispose_engines()
    upgrade_to_head(url)
    dispose_engines()
