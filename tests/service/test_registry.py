"""The registry on SQLite and PostgreSQL: migrations, round trips, claiming, tokens."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from service import registry
from service.db import models
from service.db.session import (
    current_revision,
    downgrade_to_base,
    get_engine,
    head_revision,
    session_scope,
    table_names,
    upgrade_to_head,
)
from zooens.errors import ConflictError, NotFoundError

TABLES = {"zoo_models", "datasets", "jobs", "job_units", "embeddings", "knn_scores", "finetune_runs",
          "ensembles", "ensemble_members", "api_tokens"}


def _dataset(s, name="d"):
    return registry.get_or_create_dataset(s, name=name, source=f"/data/{name}", fingerprint="f" * 64,
                                          classes=["a", "b"], counts={"train": {"a": 2, "b": 2}})


def _job(s, ds_id):
    return registry.create_job(s, dataset_id=ds_id, zoo_spec="embedded", params={"top_k": 1})


def test_migrations_create_every_table_and_match_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert TABLES <= set(table_names(db_url))
    assert current_revision(db_url) == head_revision()
    with get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), models.Base.metadata)
    assert diff == []
    downgrade_to_base(db_url)
    assert not TABLES & set(table_names(db_url))
    upgrade_to_head(db_url)
    assert TABLES <= set(table_names(db_url))


def test_round_trip_and_cascade(db_url):
    with session_scope() as s:
        ds = _dataset(s)
        assert registry.get_or_create_dataset(s, name="d", source="/data/d", fingerprint="f" * 64,
                                              classes=[], counts={}).id == ds.id
        job = _job(s, ds.id)
        registry.ensure_units(s, job.id, [("embed:a", "embed"), ("embed:b", "embed")])
        registry.ensure_units(s, job.id, [("embed:a", "embed")])
        registry.add_knn_score(s, job.id, model_name="a", knn_accuracy=0.5, val_accuracy=0.4, k=3)
        registry.add_knn_score(s, job.id, model_name="b", knn_accuracy=0.7, val_accuracy=0.1, k=3)
        run = registry.add_finetune_run(
            s, job.id, unit_key="finetune:a", model="a", strategy="linear", hparams={"lr": 0.1}, seed=0,
            val_ce=0.3, val_acc=0.9, test_acc=0.8, seconds=1.0, updated_params=10, update_bytes=40,
            artifact_path="/x", probs_path="/y")
        ens = registry.create_ensemble(s, job.id, members=[(run.id, 1.0)], val_ce=0.3, val_acc=0.9, test_acc=0.8,
                                       size=1, loss_curve=[0.3])
        job_id, ens_id = job.id, ens.id
    with session_scope() as s:
        assert [u.key for u in registry.list_units(s, job_id)] == ["embed:a", "embed:b"]
        assert [r.model_name for r in registry.get_ranking(s, job_id)] == ["b", "a"]
        ens = registry.get_ensemble(s, ens_id)
        assert [(m.run_id, m.weight) for m in ens.members] == [(run.id, 1.0)]
        assert registry.get_job(s, job_id).created_at.tzinfo is not None
        s.delete(registry.get_dataset(s, ds.id))
    with session_scope() as s:
        for model in (models.Job, models.JobUnit, models.KnnScore, models.FinetuneRun, models.Ensemble,
                      models.EnsembleMember):
            assert s.scalars(select(model)).all() == [], model.__tablename__
        with pytest.raises(NotFoundError):
            registry.get_job(s, job_id)


def test_cancel_rules(db_url):
    with session_scope() as s:
        ds = _dataset(s)
        queued, running = _job(s, ds.id), _job(s, ds.id)
        registry.set_job_status(s, running.id, "running", worker_id="w")
        assert registry.request_cancel(s, queued.id).status == "cancelled"
        assert registry.request_cancel(s, running.id).cancel_requested
        registry.set_job_status(s, running.id, "cancelled")
        with pytest.raises(ConflictError):
            registry.request_cancel(s, running.id)


def test_concurrent_claims_never_share_a_job(db_url):
    with session_scope() as s:
        ds = _dataset(s)
        ids = {_job(s, ds.id).id for _ in range(12)}
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker(name: str) -> None:
        barrier.wait()
        while True:
            with session_scope() as s:
                job = registry.claim_job(s, name)
                job_id = None if job is None else job.id
            if job_id is None:
                return
            with lock:
                claimed.append((name, job_id))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [j for _, j in claimed]
    assert sorted(got) == sorted(ids)  # every job once, none twice


def test_stale_running_job_is_claimed_again(db_url, monkeypatch):
    with session_scope() as s:
        ds = _dataset(s)
        job_id = _job(s, ds.id).id
        assert registry.claim_job(s, "first").id == job_id
    with session_scope() as s:
        assert registry.claim_job(s, "second") is None  # heartbeat is fresh
        assert registry.heartbeat(s, job_id, "first")
        job = registry.get_job(s, job_id)
        job.heartbeat_at = job.heartbeat_at - timedelta(hours=1)
    with session_scope() as s:
        job = registry.claim_job(s, "second")
        assert job.id == job_id and job.worker_id == "second" and job.attempts == 2
        assert not registry.heartbeat(s, job_id, "first")  # the old owner lost it


def test_unit_claims_never_duplicate(db_url):
    with session_scope() as s:
        ds = _dataset(s)
        job_id = _job(s, ds.id).id
        registry.ensure_units(s, job_id, [(f"u{i}", "finetune") for i in range(10)])
    seen: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with session_scope() as s:
                unit = registry.claim_unit(s, job_id, name)
                if unit is None:
                    return
                key = unit.key
                registry.finish_unit(s, unit.id, {"by": name})
            with lock:
                seen.append(key)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(f"u{i}" for i in range(10))
    with session_scope() as s:
        assert len(registry.done_units(s, job_id)) == 10


def test_tokens_are_stored_hashed_and_revocable(db_url):
    with session_scope() as s:
        plain, row = registry.create_token(s, "alice")
        with pytest.raises(ConflictError):
            registry.create_token(s, "alice")
    with session_scope() as s:
        stored = s.scalars(select(models.ApiToken)).one()
        assert plain not in (stored.token_hash, stored.prefix) and len(stored.token_hash) == 64
        assert registry.verify_token(s, plain).name == "alice"
        assert registry.verify_token(s, plain + "x") is None
        registry.revoke_token(s, "alice")
    with session_scope() as s:
        assert registry.verify_token(s, plain) is None
