"""Request and response schemas of the REST API (families: XCreate, XPublic, XsPublic)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from zooens.service.jobs.params import JobParams
from zooens.service.reports import (
    EnsembleMemberPublic,
    EnsemblePublic,
    JobPublic,
    JobReport,
    RankingRow,
    RunPublic,
)

__all__ = ["DatasetPublic", "DatasetRegister", "EnsembleMemberPublic", "EnsemblePublic", "Health", "JobCreate",
           "JobPublic", "JobReport", "Message", "Page", "Prediction", "PredictionsPublic", "RankingRow", "RunPublic",
           "WeightSetPublic", "ZooSetsPublic"]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int


class Message(BaseModel):
    detail: str


class WeightSetPublic(BaseModel):
    name: str
    arch: str
    tag: str | None = None
    origin: str
    weights_present: bool
    input_size: list[int] | None = None
    embed_dim: int | None = None
    num_params: int | None = None
    license: str | None = None
    upstream_data: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict, description="Every recorded fact of the weight set.")


class ZooSetsPublic(BaseModel):
    sets: dict[str, list[str]]


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    source: str
    fingerprint: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    created_at: datetime


class DatasetRegister(BaseModel):
    path: str = Field(description="A server-side dataset path under one of ZOOENS_DATA_ROOTS.")
    name: str | None = None


class JobCreate(JobParams):
    """A job: the dataset, the zoo, and every `JobParams` field (all optional)."""

    dataset_id: int = Field(ge=1, le=2**31 - 1)
    zoo: str | list[str] = Field(default="embedded", description="'embedded', 'user', a glob, or names.")

    def params(self) -> JobParams:
        return JobParams.model_validate(self.model_dump(exclude={"dataset_id", "zoo"}))


class Prediction(BaseModel):
    filename: str
    label: str
    probabilities: dict[str, float]


class PredictionsPublic(BaseModel):
    ensemble_id: int
    classes: list[str]
    data: list[Prediction]


class Health(BaseModel):
    status: str
    database: str | None = None
    revision: str | None = None
