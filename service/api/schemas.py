"""Request and response schemas of the REST API (families: XCreate, XPublic, XsPublic)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from zooens.pipeline.params import JobParams
from zooens.service.reports import (
    EnsembleMemberPublic,
    EnsemblePublic,
    JobPublic,
    JobReport,
    RankingRow,
    RunPublic,
    WeightSetPublic,
)

__all__ = [
    "DatasetPublic",
    "DatasetRegister",
    "EnsembleMemberPublic",
    "EnsemblePublic",
    "Health",
    "JobCreate",
    "JobPublic",
    "JobReport",
    "Message",
    "Page",
    "Prediction",
    "PredictionsPublic",
    "RankingRow",
    "RunPublic",
    "WeightSetPublic",
    "ZooSetsPublic",
]

T = TypeVar("T")


def no_control_characters(value: str) -> str:
    """NUL and other control characters are refused at the edge: PostgreSQL cannot store NUL in text, and no name or
    path needs them."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain NUL or other control characters; remove them")
    return value


CleanStr = Annotated[str, AfterValidator(no_control_characters)]
"""A string from a client that may be stored or used as a path."""


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int


class Message(BaseModel):
    detail: str


class ZooSetsPublic(BaseModel):
    sets: dict[str, list[str]]


class DatasetPublic(BaseModel):
    """What anyone may see of a dataset: ids, names and counts; never where it is stored on the server."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    fingerprint: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    created_at: datetime


class DatasetRegister(BaseModel):
    path: CleanStr = Field(
        min_length=1, max_length=4096, description="A server-side dataset path under one of ZOOENS_DATA_ROOTS."
    )
    name: CleanStr | None = Field(default=None, min_length=1, max_length=200)


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
