"""Request and response schemas of the REST API (families: XCreate, XPublic, XsPublic)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from zooens.pipeline.params import JobParams
from zooens.service.api.errors import Message, ValidationIssue
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
    "PullFilePublic",
    "PullOutcomePublic",
    "PullPublic",
    "ValidationIssue",
    "WeightSetPublic",
    "ZooPullCreate",
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


class ZooSetsPublic(BaseModel):
    sets: dict[str, list[str]]


MAX_PULL_ENTRIES = 64
"""At most this many names or globs in one pull request, and at most this many models once they are expanded."""


class ZooPullCreate(BaseModel):
    """Weight sets whose missing weights the server should fetch from the Hugging Face hub."""

    model_config = ConfigDict(extra="forbid")

    models: list[Annotated[CleanStr, Field(min_length=1, max_length=300)]] = Field(
        min_length=1,
        max_length=MAX_PULL_ENTRIES,
        description=f"Names, globs (e.g. 'resnet18*') or zoo sets, at most {MAX_PULL_ENTRIES}; once expanded, at "
        f"most {MAX_PULL_ENTRIES} models.",
    )


class PullFilePublic(BaseModel):
    model: str
    filename: str
    done_bytes: int
    total_bytes: int | None


class PullOutcomePublic(BaseModel):
    model: str
    status: str = Field(description="pulled, present or failed")
    files: list[str] | int | None = None
    bytes: int | None = None
    message: str | None = None


class PullPublic(BaseModel):
    """A weight pull running in the server: its status, byte progress and, once done, each model's outcome."""

    id: str
    status: str = Field(description="running, succeeded or failed")
    models: list[str] = Field(description="The models this pull fetches.")
    elsewhere: dict[str, str] = Field(
        default_factory=dict, description="Models asked for that another running pull fetches: model -> pull id."
    )
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    current: str | None = Field(default=None, description="The model being fetched now.")
    models_done: int = 0
    done_bytes: int = 0
    total_bytes: int = 0
    files: list[PullFilePublic] = Field(default_factory=list)
    outcomes: list[PullOutcomePublic] = Field(default_factory=list)


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
