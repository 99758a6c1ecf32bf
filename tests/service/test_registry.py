"""The registry on SQLite and PostgreSQL: migrations, round trips, claiming, tokens."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from zooens.errors import ConflictError, NotFoundError
from zooens.pipeline.records import EnsembleMemberRecord, EnsembleRecord, RunRecord, ScoreRecord
from zooens.service import registry
from zooens.service.db import models
from zooens.service.db.session import (
    current_revision,
    downgrade_to_base,
    get_engine,
    head_revision,
    session_scope,
    table_names,
    upgrade_to_head,
)

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
}


def _dataset(s, name="d"):
    return registry.get_or_create_dataset(
        s,
        name=name,
        source=f"/data/{name}",
        fingerprint="f" * 64,
        classes=["a", "b"],
        counts={"train": {"a": 2, "b": 2}},
    )


def _job(s, ds_id):
    return registry.create_job(s, dataset_id=ds_id, zoo="embedded", zoo_models=["a", "b"], params={"top_k": 1})


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
        assert (
            registry.get_or_create_dataset(
                s, name="d", source="/data/d", fingerprint="f" * 64, classes=[], counts={}
            ).id
            == ds.id
        )
        job = _job(s, ds.id)
        registry.ensure_units(s, job.id, [("embed:a", "embed"), ("embed:b", "embed")])
        registry.ensure_units(s, job.id, [("embed:a", "embed")])
        registry.add_knn_score(s, job.id, ScoreRecord(model_name="a", knn_accuracy=0.5, val_accuracy=0.4, k=3))
        registry.add_knn_score(s, job.id, ScoreRecord(model_name="b", knn_accuracy=0.7, val_accuracy=0.1, k=3))
        run = _run(s, job.id, "finetune:a")
        ens = registry.create_ensemble(s, job.id, _ensemble(("finetune:a", 1.0)))
        job_id, ens_id = job.id, ens.id
    with session_scope() as s:
        assert [u.key for u in registry.list_units(s, job_id)] == ["embed:a", "embed:b"]
        assert [r.model_name for r in registry.get_ranking(s, job_id)] == ["b", "a"]
        ens = registry.get_ensemble(s, ens_id)
        assert [(m.run_id, m.weight) for m in ens.members] == [(run.id, 1.0)]
        assert registry.get_job(s, job_id).created_at.tzinfo is not None
        s.delete(registry.get_dataset(s, ds.id))
    with session_scope() as s:
        for model in (
            models.Job,
            models.JobUnit,
            models.KnnScore,
            models.FinetuneRun,
            models.Ensemble,
            models.EnsembleMember,
        ):
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


def test_datasets_create_conflict_list_and_page(db_url):
    with session_scope() as s:
        a = _dataset(s, "a")
        with pytest.raises(ConflictError):
            registry.create_dataset(s, name="again", source="/data/a", fingerprint="f" * 64, classes=[], counts={})
        b = registry.create_dataset(
            s,
            name="b",
            source="/data/b",
            fingerprint="e" * 64,
            classes=["x"],
            counts={"train": {"x": 3}},
            storage_path="/store/b",
        )
    with session_scope() as s:
        rows, count = registry.list_datasets(s, limit=1)
        assert count == 2 and [r.id for r in rows] == [b.id]
        assert [r.id for r in registry.list_datasets(s, limit=1, offset=1)[0]] == [a.id]
        got = registry.get_dataset(s, b.id)
        assert (got.classes, got.counts, got.storage_path) == (["x"], {"train": {"x": 3}}, "/store/b")
        with pytest.raises(NotFoundError):
            registry.get_dataset(s, 9999)
        with pytest.raises(NotFoundError):
            registry.create_job(s, dataset_id=9999, zoo="embedded", zoo_models=[], params={})


def test_job_listing_status_and_progress(db_url):
    from zooens.errors import ConfigError

    with session_scope() as s:
        ds = _dataset(s)
        jobs = [_job(s, ds.id) for _ in range(3)]
        registry.set_job_status(s, jobs[0].id, "running", worker_id="w")
        registry.set_job_progress(s, jobs[0].id, stage="embed", progress={"embed": {"done": 1, "total": 3}})
        registry.set_job_status(s, jobs[1].id, "failed", error="ValueError: bad")
        with pytest.raises(ConfigError):
            registry.set_job_status(s, jobs[2].id, "exploded")
        with pytest.raises(ConfigError):
            registry.list_jobs(s, status="exploded")
        with pytest.raises(NotFoundError):
            registry.set_job_progress(s, 9999, stage="embed", progress={})
    with session_scope() as s:
        running = registry.get_job(s, jobs[0].id)
        assert (running.stage, running.progress["embed"]["done"], running.worker_id) == ("embed", 1, "w")
        assert running.started_at is not None and running.heartbeat_at is not None
        failed = registry.get_job(s, jobs[1].id)
        assert failed.error == "ValueError: bad" and failed.finished_at is not None
        assert [j.id for j in registry.list_jobs(s, status="queued")[0]] == [jobs[2].id]
        rows, count = registry.list_jobs(s, limit=2, offset=0)
        assert count == 3 and [j.id for j in rows] == [jobs[2].id, jobs[1].id]


def _zoo_model(s, name):
    return s.scalar(select(models.ZooModel).where(models.ZooModel.name == name))


def _embedding(s, cache_key):
    return s.scalar(select(models.Embedding).where(models.Embedding.cache_key == cache_key))


def test_zoo_models_and_embeddings_are_idempotent(db_url):
    facts = {
        "name": "tf_efficientnet_lite0.in1k",
        "arch": "tf_efficientnet_lite0",
        "tag": "in1k",
        "origin": "embedded",
        "source": {"kind": "package", "path": "/w.pth", "sha256": "a" * 64},
        "input": {"input_size": [3, 224, 224]},
        "embed_dim": 1280,
        "num_params": 4_652_008,
        "license": "apache-2.0",
    }
    with session_scope() as s:
        first = registry.upsert_zoo_model(s, facts)
        again = registry.upsert_zoo_model(s, {**facts, "embed_dim": 1281})
        assert first.id == again.id
        kwargs = dict(
            cache_key="k" * 64,
            model_name=facts["name"],
            dataset_fingerprint="f" * 64,
            split="train",
            path="/cache/k.npy",
            n=10,
            dim=1280,
            preprocessing={"resolution": 224},
            seconds=1.5,
        )
        e1 = registry.record_embedding(s, **kwargs)
        e2 = registry.record_embedding(s, **{**kwargs, "n": 99})
        assert e1.id == e2.id and e2.n == 10
    with session_scope() as s:
        (row,) = s.scalars(select(models.ZooModel)).all()
        assert (row.embed_dim, row.source_kind, row.sha256, row.meta) == (
            1281,
            "package",
            "a" * 64,
            {"license": "apache-2.0"},
        )
        assert _zoo_model(s, facts["name"]).input_config == {"input_size": [3, 224, 224]}
        assert _embedding(s, "k" * 64).preprocessing == {"resolution": 224}
        assert _embedding(s, "nope") is None
        assert _zoo_model(s, "nope") is None


def _run(s, job_id, key="finetune:a", **over):
    fields = dict(
        model_name="a",
        strategy="linear",
        hparams={"lr": 0.1},
        seed=0,
        val_ce=0.3,
        val_acc=0.9,
        test_acc=0.8,
        seconds=1.0,
        updated_params=10,
        update_bytes=40,
        artifact_path="/x",
        probs_path="/y",
    )
    return registry.add_finetune_run(s, job_id, RunRecord(unit_key=key, **{**fields, **over}))


def _ensemble(*members: tuple[str, float], **over):
    fields = dict(val_ce=0.3, val_acc=0.9, test_acc=0.8, size=len(members), loss_curve=[0.3])
    return EnsembleRecord(
        members=[EnsembleMemberRecord(unit_key=k, weight=w) for k, w in members],
        selected=[k for k, _ in members],
        **{**fields, **over},
    )


def test_ensemble_members_follow_their_runs(db_url):
    with session_scope() as s:
        ds = _dataset(s)
        job, other = _job(s, ds.id), _job(s, ds.id)
        r1, r2 = _run(s, job.id, "finetune:a"), _run(s, job.id, "finetune:b", model_name="b")
        assert _run(s, job.id, "finetune:a", val_acc=0.95).id == r1.id  # same unit: replaced
        _run(s, other.id, "finetune:x")
        with pytest.raises(NotFoundError):
            registry.create_ensemble(s, job.id, _ensemble(("finetune:x", 1.0)))  # the other job's run
        ens = registry.create_ensemble(
            s, job.id, _ensemble(("finetune:b", 0.75), ("finetune:a", 0.25), val_ce=0.2, loss_curve=[0.3, 0.2])
        )
        ens_id = ens.id
    with session_scope() as s:
        ens = registry.get_job_ensemble(s, job.id)
        assert ens.id == ens_id and ens.loss_curve == [0.3, 0.2]
        assert [(m.run_id, m.weight, m.position) for m in ens.members] == [(r2.id, 0.75, 0), (r1.id, 0.25, 1)]
        assert [r.val_acc for r in registry.list_finetune_runs(s, job.id)] == [0.95, 0.9]
        s.delete(registry.get_finetune_run(s, r2.id))
    with session_scope() as s:
        assert [m.run_id for m in registry.get_ensemble(s, ens_id).members] == [r1.id]
        assert registry.get_job_ensemble(s, other.id) is None
        with pytest.raises(NotFoundError):
            registry.get_ensemble(s, 9999)


def test_units_finish_fail_and_pending(db_url):
    with session_scope() as s:
        job_id = _job(s, _dataset(s).id).id
        registry.ensure_units(s, job_id, [("a", "embed"), ("b", "embed")])
        registry.ensure_units(s, job_id, [("b", "embed"), ("c", "ensemble")])
        assert [(u.key, u.position) for u in registry.list_units(s, job_id)] == [("a", 0), ("b", 1), ("c", 2)]
    with session_scope() as s:
        a = registry.claim_unit(s, job_id, "w")
    with session_scope() as s:
        registry.fail_unit(s, a.id, "OSError: disk full", worker_id="w")
        with pytest.raises(NotFoundError):
            registry.finish_unit(s, 9999, {})
        registry.finish_unit(s, registry.get_unit(s, job_id, "b").id, {"x": 1})
    with session_scope() as s:
        assert registry.get_unit(s, job_id, "a").error == "OSError: disk full"
        assert [u.key for u in registry.pending_units(s, job_id)] == ["c"]
        assert registry.done_units(s, job_id) == {"b": {"x": 1}}
        with pytest.raises(NotFoundError):
            registry.get_unit(s, job_id, "zzz")


def test_token_use_is_stamped_and_revocation_by_id(db_url):
    with session_scope() as s:
        plain, row = registry.create_token(s, "ci")
        assert plain.startswith(registry.TOKEN_PREFIX) and row.prefix == plain[: len(row.prefix)]
        assert row.token_hash == registry.hash_token(plain) and row.last_used_at is None
        assert registry.verify_token(s, "") is None
    with session_scope() as s:
        assert registry.verify_token(s, plain).last_used_at is not None
        revoked = registry.revoke_token(s, row.id)
        first = revoked.revoked_at
        assert registry.revoke_token(s, "ci").revoked_at == first
        with pytest.raises(NotFoundError):
            registry.revoke_token(s, "nobody")
    with session_scope() as s:
        assert registry.verify_token(s, plain) is None


def test_a_job_keeps_its_zoo_as_given_and_as_resolved(db_url):
    with session_scope() as s:
        job_id = registry.create_job(
            s, dataset_id=_dataset(s).id, zoo="a.in1k,b.in1k", zoo_models=["a.in1k", "b.in1k"], params={"top_k": 1}
        ).id
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert (job.zoo, job.zoo_models, job.params) == ("a.in1k,b.in1k", ["a.in1k", "b.in1k"], {"top_k": 1})


def test_result_writes_refuse_unknown_and_missing_fields(db_url):
    with session_scope() as s:
        job_id = _job(s, _dataset(s).id).id
        with pytest.raises(ValidationError):
            _run(s, job_id, val_proba="not a column")
        with pytest.raises(ValidationError):
            _run(s, job_id, model="a")  # the old alias is gone
        with pytest.raises(ValidationError):
            RunRecord(unit_key="finetune:a", model_name="a")
        with pytest.raises(ValidationError):
            ScoreRecord(model_name="a", knn_accuracy=0.5, accuracy=0.4)
        with pytest.raises(ValidationError):
            ScoreRecord(model_name="a")
        first = registry.add_knn_score(
            s,
            job_id,
            ScoreRecord(
                model_name="a",
                k=3,
                knn_accuracy=0.5,
                val_accuracy=0.4,
                logme=1.5,
                embed_seconds=2.0,
                images_per_s=100.0,
                params=10,
                embed_dim=8,
            ),
        )
        again = registry.add_knn_score(s, job_id, ScoreRecord(model_name="a", knn_accuracy=0.6))
        assert again.id == first.id
        assert (again.knn_accuracy, again.val_accuracy, again.logme, again.embed_dim) == (0.6, None, None, None)


def test_a_released_job_is_queued_again_with_its_running_units_pending(db_url):
    with session_scope() as s:
        ds = _dataset(s)
        job_id, cancelled_id = _job(s, ds.id).id, _job(s, ds.id).id
    with session_scope() as s:
        assert registry.claim_job(s, "w").id == job_id
        registry.ensure_units(s, job_id, [("a", "embed"), ("b", "embed")])
    with session_scope() as s:
        registry.claim_unit(s, job_id, "w")
    with session_scope() as s:
        assert not registry.release_job(s, job_id, "other")
        assert registry.release_job(s, job_id, "w")
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert (job.status, job.worker_id, job.heartbeat_at) == ("queued", None, None)
        assert [u.key for u in registry.pending_units(s, job_id)] == ["a", "b"]
        assert not registry.release_job(s, job_id, "w")  # no longer running
        assert registry.claim_job(s, "v").id == job_id
        assert registry.claim_job(s, "v").id == cancelled_id
        registry.request_cancel(s, cancelled_id)
        assert registry.release_job(s, cancelled_id, "v")
    with session_scope() as s:
        assert registry.get_job(s, cancelled_id).status == "cancelled"
