"""A unit's record round-trips through what the registry stores (`job_units.result`), stored units of the
earlier layout included; a missing or unknown field is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from zooens.pipeline.records import (
    EmbeddingEntry,
    EmbedRecord,
    EnsembleMemberRecord,
    EnsembleRecord,
    RunFacts,
    RunRecord,
)
from zooens.service.jobs.units import result_from_json

RUN_KEY = "finetune:m.a:linear:lr=0.1:steps=1"


def test_records_round_trip_through_stored_units_and_refuse_missing_or_unknown_fields():
    embed = EmbedRecord(
        model_name="m.a",
        k=10,
        knn_accuracy=0.5,
        val_accuracy=None,
        logme=1.0,
        embed_seconds=1.0,
        images_per_s=None,
        params=10,
        embed_dim=4,
        cached=True,
        dataset_fingerprint="f",
        embeddings=[EmbeddingEntry(split="train", key="k", path="p", n=3, dim=4)],
    )
    assert result_from_json("embed:m.a", embed.model_dump(mode="json")) == embed
    run = RunRecord(
        unit_key=RUN_KEY,
        model_name="m.a",
        strategy="linear",
        hparams={"lr": 0.1},
        seed=0,
        val_ce=1.0,
        val_acc=0.5,
        test_acc=None,
        seconds=1.0,
        updated_params=3,
        update_bytes=12,
        artifact_path="a",
        probs_path="p",
    )
    assert result_from_json(RUN_KEY, run.model_dump(mode="json")) == run
    ens = EnsembleRecord(
        members=[EnsembleMemberRecord(unit_key=RUN_KEY, weight=1.0)],
        selected=[RUN_KEY],
        val_ce=1.0,
        val_acc=0.5,
        test_acc=None,
        size=1,
        loss_curve=[1.0],
    )
    assert result_from_json("ensemble", ens.model_dump(mode="json")) == ens
    broken = run.model_dump()
    del broken["val_ce"]
    with pytest.raises(ValidationError):
        result_from_json(RUN_KEY, broken)
    with pytest.raises(ValidationError):
        RunRecord(**run.model_dump(), val_proba="not a field")


def test_units_stored_before_records_still_read():
    """A run's unit result as the earlier layout stored it (no unit key, costs absent before migration 0004)."""
    stored = {
        "model_name": "m.a",
        "strategy": "linear",
        "hparams": {"lr": 0.1},
        "seed": 0,
        "val_ce": 1.0,
        "val_acc": 0.5,
        "test_acc": None,
        "seconds": 1.0,
        "updated_params": 3,
        "update_bytes": 12,
        "artifact_path": "a",
        "probs_path": "p",
    }
    run = result_from_json(RUN_KEY, stored)
    assert isinstance(run, RunRecord) and run.unit_key == RUN_KEY and run.gflops is None
    assert run.part(RunFacts).update_bytes == 12 and "artifact_path" not in run.part(RunFacts).model_dump()
