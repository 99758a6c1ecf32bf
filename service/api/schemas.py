"""Request and response schemas of the REST API (families: XCreate, XPublic, XsPublic)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

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


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: int = Field(ge=1, le=2**31 - 1)
    zoo: str | list[str] = Field(default="embedded", description="'embedded', 'user', a glob, or names.")
    top_k: int = Field(default=3, ge=1, le=100)
    k: int = Field(default=10, ge=1, le=1000)
    strategies: list[str] = Field(default_factory=lambda: ["linear"], min_length=1, max_length=10)
    learning_rates: list[float] | None = Field(default=None, max_length=20)
    steps: list[int] | None = Field(default=None, max_length=20)
    ensemble_size: int = Field(default=10, ge=1, le=100)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    resolution: int | None = Field(default=None, ge=16, le=1024)
    n_train: int = Field(default=800, ge=2, le=1_000_000)
    n_val: int = Field(default=200, ge=1, le=1_000_000)
    max_test: int | None = Field(default=None, ge=1, le=10_000_000)
    strategy_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-strategy options, e.g. {\"lora\": {\"rank\": 8}, \"film\": {\"head\": \"lda\"}}."
    )


class JobPublic(BaseModel):
    id: int
    dataset_id: int = Field(ge=1, le=2**31 - 1)
    zoo: str
    status: str
    stage: str | None
    progress: dict[str, Any]
    params: dict[str, Any]
    error: str | None
    worker_id: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RankingRow(BaseModel):
    rank: int
    model: str
    knn_accuracy: float
    val_accuracy: float | None
    logme: float | None
    finetuned_val_acc: float | None
    finetuned_val_ce: float | None
    finetuned_test_acc: float | None
    best_strategy: str | None
    updated_params: int | None
    update_bytes: int | None
    params: int | None
    embed_dim: int | None
    embed_seconds: float | None
    images_per_s: float | None


class RunPublic(BaseModel):
    id: int
    model: str
    strategy: str
    hparams: dict[str, Any]
    val_ce: float
    val_acc: float
    test_acc: float | None
    seconds: float
    updated_params: int
    update_bytes: int


class EnsembleMemberPublic(BaseModel):
    run_id: int
    model: str
    strategy: str
    hparams: dict[str, Any]
    weight: float
    val_ce: float
    val_acc: float
    test_acc: float | None
    updated_params: int
    update_bytes: int


class EnsemblePublic(BaseModel):
    id: int
    job_id: int
    size: int
    val_ce: float
    val_acc: float | None
    test_acc: float | None
    loss_curve: list[float]
    members: list[EnsembleMemberPublic]


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
