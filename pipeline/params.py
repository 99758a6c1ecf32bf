"""What a user chooses for a job: one pydantic model for the API, the CLI and the VTAB runner.

`JobParams` is validated once, when it is built: bounds on every number, strategy names
through the strategy registry, the sweep's values through `zooens.ensemble`'s checks, and each
strategy's options through the strategy's own `check_options`. The API's `JobCreate` adds only
`dataset_id` and `zoo`. A job row stores `JobParams.model_dump()`; reading it back is
`JobParams.model_validate(row.params)`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from zooens.errors import ConfigError, ZooensError

if TYPE_CHECKING:
    from types import ModuleType

    from zooens.ensemble import SweepConfig

__all__ = ["JobParams", "domain_error", "parse_params"]

INT32_MAX = 2**31 - 1
MAX_SPLIT_IMAGES = 1_000_000
"""Most images `n_train` and `n_val` may ask for (they size the split drawn from train)."""


class JobParams(BaseModel):
    """Job parameters. Defaults suit a VTAB-1k-sized dataset on a CPU.

    A new parameter is one field here: it is also an option of `zooens run` (`service/cli/_params.py`),
    `--field-name` with the field's default and its description as help (a list is comma-separated),
    unless the field names its own flags: `json_schema_extra={"x-cli": "--lr"}` (or a list, `["--option", "-o"]`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(default=3, ge=1, le=100, description="How many of the best-ranked models to fine-tune.")
    k: Annotated[int, Field(ge=1, le=1000)] | Literal["auto"] = Field(
        default="auto",
        description="Neighbours of the kNN score; 'auto' chooses from the training set's class sizes (median class "
        "size - 1, at most 10: 1 for two or three examples per class), recorded with each score.",
    )
    strategies: list[str] = Field(
        default_factory=lambda: ["auto", "concat"],
        min_length=1,
        max_length=10,
        description="Fine-tuning strategies of the sweep; 'auto' is 'full' on a GPU "
        "worker and 'linear' on a CPU-only one; 'concat' is one probe on the top-K's concatenated embeddings.",
    )
    augmentation: Literal["auto", "none", "flip", "crop", "crop_flip"] = Field(
        default="auto",
        description="Training-time augmentation; 'auto' flips only data that declares flips label-preserving "
        "(and random-crops for 'full', as BiT, where crops keep labels). Recorded with every run.",
    )
    learning_rates: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Learning rates of the sweep (default: each strategy's).",
        json_schema_extra={"x-cli": "--lr"},
    )
    steps: list[int] | None = Field(
        default=None, min_length=1, max_length=20, description="Step counts of the sweep (default: each strategy's)."
    )
    batch_size: int | None = Field(
        default=None, ge=1, le=4096, description="Batch size of the sweep (default: each strategy's)."
    )
    ensemble_size: int = Field(default=10, ge=1, le=100, description="Most members of the greedy ensemble.")
    seed: int = Field(default=0, ge=0, le=INT32_MAX, description="Seed of every random choice.")
    resolution: int | None = Field(default=None, ge=16, le=1024, description="Input resolution override (pixels).")
    n_train: int = Field(
        default=800,
        ge=2,
        le=MAX_SPLIT_IMAGES,
        description="Training examples drawn from train when there is no val split (at most 1,000,000; with a val "
        "split it is not used, and a value beyond the train split's images is refused at submission).",
    )
    n_val: int = Field(
        default=200,
        ge=1,
        le=MAX_SPLIT_IMAGES,
        description="Validation examples drawn from train when there is no val split (at most 1,000,000; with a "
        "val split it is not used, and a value beyond the val split's images is refused at submission).",
    )
    max_test: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Evaluate on a seeded subsample of the test split."
    )
    preprocessing: Literal["model", "resize"] = Field(
        default="model",
        description="How images reach each model: 'model' is the model's own evaluation transform (resize and "
        "centre crop as its pretrained config); 'resize' goes straight to the input size, no crop, "
        "bilinear (VTAB's reference). The model's mean/std either way.",
    )
    small_classes: Literal["error", "warn", "allow"] = Field(
        default="error",
        description="What the job does when a class has fewer than two training examples (such a class can never "
        "be its own leave-one-out neighbour): refuse the job, run with a warning, or run silently "
        "(VTAB-1k, whose 800 examples leave some classes with one or none).",
    )
    max_gflops: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Inference budget of the ensemble: GFLOPs of one image through all its distinct forward passes "
        "(members sharing a frozen backbone pay for it once). None: no budget.",
    )
    max_latency_ms: float | None = Field(
        default=None,
        gt=0,
        le=1e7,
        description="Inference budget of the ensemble: summed batch-1 latency (ms) of its distinct forward passes, "
        "as measured on the worker's device. None: no budget.",
    )
    audit_ranking: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Also fine-tune this many models beyond the top-K with the cheapest strategy (linear), to "
        "measure how well the kNN ranking (and LogME) predicted the fine-tuned order. They are audit "
        "runs: the ensemble is still built from the top-K.",
    )
    taps: Literal["none", "auto"] = Field(
        default="auto",
        description="Layer taps as extra candidates: 'auto' (the default) adds each model's last few stages as "
        "`model@layer` feature extractors, ranked like any model and embedded in the model's own forward pass "
        "(see the README's peer benchmark); 'none' ranks the models alone.",
    )
    pull: bool = Field(
        default=False,
        description="Fetch the zoo's missing weights from the Hugging Face hub on the worker, as the job's first "
        "stage, verified against the sha256 the hub announces (`zooens zoo pull` does it ahead of a job).",
    )
    strategy_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Per-strategy options, e.g. {"lora": {"rank": 8}, "film": {"head": "lda"}}.',
        json_schema_extra={"x-cli": ["--option", "-o"]},
    )

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        for name in value:
            _ensemble().get_strategy(name)  # ConfigError naming the close matches
        return value

    @field_validator("learning_rates")
    @classmethod
    def _learning_rates(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else [_ensemble().check_learning_rate(v) for v in value]

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else [_ensemble().check_steps(v) for v in value]

    @model_validator(mode="after")
    def _strategy_options(self) -> JobParams:
        _refuse_non_finite("strategy_options", self.strategy_options)
        for name, options in self.strategy_options.items():
            try:
                strategy = _ensemble().get_strategy(name)
            except ConfigError as exc:
                raise ConfigError(f"Options given for an unknown strategy: {exc}") from None
            strategy.check_options(options)  # unknown keys and bad values fail now, not in a worker
        unused = [name for name in self.strategy_options if name not in self.runnable_strategies]
        if unused:
            raise ConfigError(
                f"Options given for {', '.join(map(repr, unused))}, which this job does not run (its strategies: "
                f"{', '.join(self.strategies)}); add {'it' if len(unused) == 1 else 'them'} to strategies "
                "or drop the options."
            )
        return self

    @property
    def runnable_strategies(self) -> set[str]:
        """The strategies this job's runs may use, whose options it takes: its `strategies`; for `auto` both it
        may resolve to (`full` on a GPU worker, `linear` on a CPU-only one); with `audit_ranking`, the audit
        runs' `linear` (`pipeline.plan.AUDIT_STRATEGY`)."""
        ensemble = _ensemble()
        names = set(self.strategies)
        if "auto" in names:
            names |= {ensemble.strategies.resolve_auto(device) for device in ("cpu", "cuda")}
        if self.audit_ranking:
            names.add("linear")
        return names

    @model_validator(mode="after")
    def _one_budget(self) -> JobParams:
        if self.max_gflops is not None and self.max_latency_ms is not None:
            raise ConfigError(
                "Give one inference budget: max_gflops or max_latency_ms, not both "
                "(the greedy selection keeps one cost within its budget)."
            )
        return self

    @property
    def budget(self) -> tuple[str, float] | None:
        """(cost metric, budget) of the ensemble, `ensemble.cost.COST_METRICS` naming the metric, or None."""
        if self.max_gflops is not None:
            return "gflops", self.max_gflops
        if self.max_latency_ms is not None:
            return "latency_ms", self.max_latency_ms
        return None

    def sweep_for(self, strategy: str, device: str | None = None) -> SweepConfig:
        """The hyper-parameter grid of one strategy: the user's values or the strategy's defaults on a worker
        of `device` (`Strategy.sweep_on`: `full` sweeps more on a GPU)."""
        ensemble = _ensemble()
        defaults = ensemble.get_strategy(strategy).sweep_on(device) or ensemble.SweepConfig()
        return ensemble.SweepConfig(
            learning_rates=tuple(self.learning_rates or defaults.learning_rates),
            steps=tuple(self.steps or defaults.steps),
            batch_size=self.batch_size or defaults.batch_size,
            seed=self.seed,
        )

    def options_for(self, strategy: str) -> dict[str, Any]:
        return dict(self.strategy_options.get(strategy, {}))


def _ensemble() -> ModuleType:
    """`zooens.ensemble` (the strategy registry and the sweep's checks), imported on first use: this module
    is read when the CLI starts, whose job flags come from `JobParams`' fields, and the ensemble layer
    brings torch (seconds). The layering test allows this one function-local import."""
    import zooens.ensemble

    return zooens.ensemble


def _refuse_non_finite(where: str, value: Any) -> None:
    """ConfigError for a NaN or infinite number anywhere in `value`: it means nothing as a
    hyper-parameter, and PostgreSQL's JSON cannot store it (the job row would not be written)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} is {value}; give a finite number.")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(f"{where}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_non_finite(f"{where}[{i}]", item)


def domain_error(exc: ValidationError) -> ZooensError:
    """The error a person should see: the domain error a validator raised, else a ConfigError
    naming each bad field."""
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ZooensError):
            return cause
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "parameters"
        parts.append(f"{where}: {error.get('msg')}")
    return ConfigError("Invalid job parameters: " + "; ".join(parts) + ".")


def parse_params(**fields: Any) -> JobParams:
    """`JobParams(**fields)` raising the domain error (for the CLI and the VTAB runner)."""
    try:
        return JobParams(**fields)
    except ValidationError as exc:
        raise domain_error(exc) from None
