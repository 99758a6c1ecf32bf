"""Submitting work: register a dataset, resolve a zoo, create a queued job. Shared by CLI and API."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from zooens.service import registry
from zooens.service.pipeline import JobParams

logger = logging.getLogger(__name__)


def register_dataset(s: Session, source: str, ds, *, name: str | None = None):
    """Record a loaded dataset (get-or-create by fingerprint and source)."""
    return registry.get_or_create_dataset(
        s,
        name=name or ds.name,
        source=source,
        fingerprint=ds.fingerprint,
        classes=list(ds.classes),
        counts=ds.summary().get("counts", {}),
    )


def record_zoo(s: Session, weight_sets) -> list[str]:
    for ws in weight_sets:
        registry.upsert_zoo_model(s, ws.to_dict())
    return [ws.name for ws in weight_sets]


def submit_job(s: Session, dataset_id: int, zoo_spec: str | list[str], params: JobParams):
    """Validate everything that can be checked now, then queue the job."""
    from zooens.zoo import resolve_zoo

    params.validate()
    weight_sets = resolve_zoo(zoo_spec)
    names = record_zoo(s, weight_sets)
    spec_text = zoo_spec if isinstance(zoo_spec, str) else ",".join(zoo_spec)
    data: dict[str, Any] = params.to_dict()
    data["_zoo_models"] = names
    job = registry.create_job(s, dataset_id=dataset_id, zoo_spec=spec_text, params=data)
    logger.info("queued job %s: %d models, strategies %s", job.id, len(names), params.strategies)
    return job
