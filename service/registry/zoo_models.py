"""Zoo models: the facts of each weight set a job or command has seen, keyed by name."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zooens.service.db.models import ZooModel

__all__ = ["upsert_zoo_model"]


def upsert_zoo_model(s: Session, facts: dict[str, Any]) -> ZooModel:
    """Insert or refresh a weight set's facts (from `WeightSet.to_dict()`), keyed by name."""
    row = s.scalar(select(ZooModel).where(ZooModel.name == facts["name"]))
    if row is None:
        row = ZooModel(name=facts["name"])
        s.add(row)
    source = facts.get("source") or {}
    row.arch = facts.get("arch") or facts["name"].split(".")[0]
    row.tag = facts.get("tag")
    row.origin = facts.get("origin") or "catalogue"
    row.source_kind = source.get("kind")
    row.source_path = None if source.get("path") is None else str(source.get("path"))
    row.hub_id = source.get("hub_id")
    row.sha256 = source.get("sha256")
    row.input_config = facts.get("input")
    row.embed_dim = facts.get("embed_dim")
    row.num_params = facts.get("num_params")
    row.meta = {
        k: facts.get(k) for k in ("upstream_data", "license", "paper", "tap_of", "layer") if facts.get(k) is not None
    }
    s.flush()
    return row
