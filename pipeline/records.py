"""The records a job produces, each declared once.

A stage of `zooens.pipeline.stages` returns one of these; the service stores it as a unit's result
(`job_units.result`, its JSON) and writes its registry row from it in one statement; the API's
response models (`zooens.service.reports`) derive from the public part of each:

| concept | record | its public part (API) | registry table |
|---|---|---|---|
| a model's ranking scores | `ScoreRecord` | `RankingRow` adds the best run | `knn_scores` |
| ranking one model (with cache entries) | `EmbedRecord` | - | `knn_scores`, `embeddings` |
| one fine-tune run, its cost included | `RunRecord` | `RunFacts` (`RunPublic` adds `id`) | `finetune_runs` |
| the greedy ensemble (budget, front) | `EnsembleRecord` | `EnsembleFacts` | `ensembles`, `ensemble_members` |

Every record reads the JSON of units stored before it existed (the same field names; fields added
later have defaults, and a run's `unit_key` comes from its unit), so jobs stored earlier still resume.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from zooens.ensemble import get_strategy

R = TypeVar("R", bound="_Record")

__all__ = [
    "EmbedRecord",
    "EmbeddingEntry",
    "EnsembleFacts",
    "EnsembleMemberRecord",
    "EnsembleRecord",
    "PullRecord",
    "RankingRow",
    "RunFacts",
    "RunRecord",
    "ScoreRecord",
    "best_runs",
    "ranking_table",
]


class _Record(BaseModel):
    # Read from ORM rows by attribute; an unknown field is an error (a stored unit result of an earlier
    # layout has no field these records lack).
    model_config = ConfigDict(from_attributes=True, extra="forbid", protected_namespaces=())

    @classmethod
    def columns(cls) -> set[str]:
        """The record's field names (the columns of its row, where it has one)."""
        return set(cls.model_fields)

    def part(self, model: type[R]) -> R:
        """This record's fields of `model`, one of its bases: a run's `RunFacts`, a ranking's `ScoreRecord`."""
        return model.model_validate(self.model_dump(include=model.columns()))


# --------------------------------------------------------------------------------------
# Pulling


class PullRecord(_Record):
    """Fetching one model's weights (`zooens.zoo.pull`): `pulled`, or `present` (nothing fetched).

    files : the files fetched, each verified against the sha256 the hub announced. bytes : their size.
    """

    model_name: str
    status: str
    files: list[str] = Field(default_factory=list)
    bytes: int = 0


# --------------------------------------------------------------------------------------
# Ranking


class ScoreRecord(_Record):
    """How well one model's frozen embeddings separate the dataset (`selection.ranking.ModelScore`)."""

    model_name: str
    k: int | None = Field(default=None, description="Neighbours behind knn_accuracy (the resolved k when 'auto').")
    knn_accuracy: float
    val_accuracy: float | None = None
    logme: float | None = None
    embed_seconds: float | None = None
    images_per_s: float | None = None
    params: int | None = None
    embed_dim: int | None = None
    knn_queries: int | None = Field(
        default=None,
        description="Leave-one-out queries behind knn_accuracy (fewer than the training examples when subsampled).",
    )
    knn1_accuracy: float | None = Field(
        default=None,
        description="Leave-one-out 1-NN accuracy on the same queries as knn_accuracy (k=1, from the same search).",
    )


class EmbeddingEntry(_Record):
    """One embedding-cache entry a ranking wrote (the `embeddings` table indexes it)."""

    split: str
    key: str
    path: str
    n: int
    dim: int


class EmbedRecord(ScoreRecord):
    """Ranking one model: its scores, whether they came from the cache, and the entries it wrote."""

    cached: bool = False
    dataset_fingerprint: str = ""
    embeddings: list[EmbeddingEntry] = Field(default_factory=list)


# --------------------------------------------------------------------------------------
# Fine-tune runs


class RunFacts(_Record):
    """What a fine-tune run is, as everyone may see it: its scores, its update size and its inference cost."""

    model_name: str
    strategy: str
    hparams: dict[str, Any]
    val_ce: float
    val_acc: float
    test_acc: float | None = None
    seconds: float
    updated_params: int = Field(description="Parameters the run changed (its update).")
    update_bytes: int = Field(description="Bytes of the update as saved (only the tensors the run changed).")
    gflops: float | None = Field(default=None, description="GFLOPs of one image's forward pass (multiply-add = 2).")
    params_count: int | None = Field(default=None, description="Parameters of the inference network.")
    latency_ms: float | None = Field(default=None, description="Batch-1 latency on the worker's device.")
    backbone_key: str | None = Field(default=None, description="Runs with the same key share one forward pass.")
    calibration: dict[str, Any] | None = Field(
        default=None,
        description="The run's own temperature, fitted on the selection rows (val, with train's cross-fitted "
        "held-out rows where the run has them), and the NLL, Brier score and ECE of its scaled "
        "probabilities on val (and test), with the ECE before scaling (`pipeline.stages.calibrate`).",
    )


class RunRecord(RunFacts):
    """One run of the sweep: `RunFacts` plus what only the service needs (where its files are).

    `unit_key` names the run (`zooens.pipeline.plan.UnitKey`); the paths are None for a run kept in
    memory (`zooens.pipeline.fit`)."""

    unit_key: str
    seed: int = 0
    artifact_path: str | None = None
    probs_path: str | None = None


def best_runs(runs: list[RunRecord] | list[RunFacts]) -> dict[str, Any]:
    """Each model's run with the lowest validation cross-entropy (the earlier on a tie); a run of a joint
    strategy (`concat`, over several models) is no one model's."""
    best: dict[str, Any] = {}
    for run in runs:
        if get_strategy(run.strategy).joint:
            continue
        current = best.get(run.model_name)
        if current is None or run.val_ce < current.val_ce:
            best[run.model_name] = run
    return best


class RankingRow(ScoreRecord):
    """A model's place in the ranking (best kNN first) with its best fine-tuned run, when it has one."""

    rank: int
    finetuned_val_acc: float | None = None
    finetuned_val_ce: float | None = None
    finetuned_test_acc: float | None = None
    best_strategy: str | None = None
    updated_params: int | None = None
    update_bytes: int | None = None


def ranking_table(scores: list[ScoreRecord], runs: list[RunRecord] | list[RunFacts]) -> list[RankingRow]:
    """One row per model in the order of `scores` (best first), with its best run (`best_runs`)."""
    best = best_runs(runs)
    rows = []
    for rank, score in enumerate(scores, start=1):
        run = best.get(score.model_name)
        extra: dict[str, Any] = {}
        if run is not None:
            extra = {
                "finetuned_val_acc": run.val_acc,
                "finetuned_val_ce": run.val_ce,
                "finetuned_test_acc": run.test_acc,
                "best_strategy": run.strategy,
                "updated_params": run.updated_params,
                "update_bytes": run.update_bytes,
            }
        rows.append(RankingRow(rank=rank, **score.part(ScoreRecord).model_dump(), **extra))
    return rows


# --------------------------------------------------------------------------------------
# The ensemble


class EnsembleMemberRecord(_Record):
    unit_key: str
    weight: float


class EnsembleFacts(_Record):
    """The greedy ensemble as everyone may see it (the columns of its row)."""

    val_ce: float
    val_acc: float | None = None
    test_acc: float | None = None
    size: int
    loss_curve: list[float]
    max_gflops: float | None = None
    max_latency_ms: float | None = None
    gflops: float | None = Field(default=None, description="GFLOPs per image of the distinct forward passes.")
    latency_ms: float | None = Field(default=None, description="Summed batch-1 latency of the distinct passes.")
    front: dict[str, Any] | None = Field(
        default=None,
        description="Accuracy against cost: `path` (each prefix of the greedy path) and `front` (the best ensemble "
        "under each budget, Pareto-optimal), each point with its members (unit keys), cost, val "
        "cross-entropy and test accuracy; `metric` names the cost.",
    )
    # Calibration (`zooens.ensemble.calibration`): the temperature fitted on the greedy's selection rows after it,
    # and the metrics of the calibrated ensemble (test ones None without a test split).
    temperature: float | None = Field(
        default=None,
        description="Temperature T dividing the log of the ensemble's probabilities, fitted by minimising the NLL "
        "(Guo et al. 2017) on the rows the greedy selected on (val, with train's cross-fitted held-out rows where "
        "the runs have them); predictions apply it. None (T = 1) for an ensemble built before calibration.",
    )
    val_nll: float | None = Field(default=None, description="Val NLL of the calibrated ensemble.")
    val_brier: float | None = Field(default=None, description="Val multi-class Brier score, calibrated.")
    val_ece: float | None = Field(default=None, description="Val ECE (15 equal-width bins), calibrated.")
    test_nll: float | None = Field(default=None, description="Test NLL of the calibrated ensemble.")
    test_brier: float | None = Field(default=None, description="Test multi-class Brier score, calibrated.")
    test_ece: float | None = Field(default=None, description="Test ECE (15 equal-width bins), calibrated.")
    uncalibrated_val_ece: float | None = Field(default=None, description="Val ECE before temperature scaling.")
    uncalibrated_test_nll: float | None = Field(default=None, description="Test NLL before temperature scaling.")
    uncalibrated_test_ece: float | None = Field(default=None, description="Test ECE before temperature scaling.")
    reliability: dict[str, Any] | None = Field(
        default=None,
        description="Reliability diagram of the calibrated ensemble on test (val without a test split): `split`, "
        "`n_bins` and `bins`, one [count, mean confidence, accuracy] per equal-width confidence bin.",
    )


class EnsembleRecord(EnsembleFacts):
    """The ensemble stage's outcome: `EnsembleFacts` plus its members (unit keys and weights), the
    greedy path's picks (`selected`, with repeats) and the job's warnings about it (`jobs.warnings`)."""

    members: list[EnsembleMemberRecord]
    selected: list[str]
    warnings: list[str] = Field(
        default_factory=list,
        description="Reasons not to trust the ensemble's validation numbers (a small val split, a val "
        "cross-entropy near 0), recorded on the job.",
    )
