"""The whole job in memory: `fit(dataset, params)` ranks the zoo, fine-tunes the top-K's sweep and
builds the greedy ensemble in this process, with no registry, and returns a `FittedEnsemble`.

It runs the same stage functions, in the same order, as a job the service runs unit by unit
(`zooens.service.jobs`), so the same inputs give the same ranking, runs and ensemble. What the
service adds is persistence (rows, files, resuming), claims, workers and cancellation.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from zooens.ensemble import Artifact, BaseModel, EnsemblePredictor, write_bundle
from zooens.ensemble.predictor import ImageInputs
from zooens.errors import ConfigError
from zooens.pipeline.checks import check_counts, job_zoo
from zooens.pipeline.params import JobParams
from zooens.pipeline.plan import UnitKey, plan_finetune_units, plan_pull_units, rank_models
from zooens.pipeline.records import EnsembleRecord, RankingRow, RunRecord, ScoreRecord, ranking_table
from zooens.pipeline.splits import prepare_job_dataset
from zooens.pipeline.stages import (
    audit_job_ranking,
    finetune_run,
    probabilities,
    pull_weights,
    rank_model,
    select_ensemble,
)
from zooens.progress import UnitProgress, inner_bars, unit_kind, unit_label
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset
from zooens.settings import get_settings
from zooens.utils import resolve_device
from zooens.zoo import create_model, get_weight_set, weights_sha256

__all__ = ["BaseWeights", "FittedEnsemble", "fit", "write_ensemble_file"]

BaseWeights = Literal["embed", "reference"]
Member = tuple[Artifact | str, float]
"""An ensemble member as `EnsemblePredictor` takes it: its artifact (or the directory it was saved to), its weight."""


def write_ensemble_file(
    members: Sequence[Member],
    target: str | Path | IO[bytes],
    *,
    base_weights: BaseWeights = "embed",
    metadata: dict[str, Any] | None = None,
    temperature: float | None = None,
) -> None:
    """Write an ensemble as one `.zooens` file (`zooens.ensemble.bundle`): each member's saved run, and per
    base model its weights (`embed`) or only its name, architecture and sha256 (`reference`).

    `temperature`: the ensemble's (`EnsembleRecord.temperature`); None takes `metadata["temperature"]`
    when it has one, else 1.0 (no scaling)."""
    if temperature is None and metadata:
        temperature = metadata.get("temperature")
    if base_weights not in ("embed", "reference"):
        raise ConfigError(f"base_weights must be 'embed' or 'reference', got {base_weights!r}.")
    loaded = [(a if isinstance(a, Artifact) else Artifact.load(a), float(w)) for a, w in members]
    bases = {}
    for model in sorted({m for a, _ in loaded for m in a.models}):
        state = None
        if base_weights == "embed":
            state = {k: v.detach().contiguous() for k, v in create_model(model, num_classes=0).state_dict().items()}
        bases[model] = BaseModel(
            name=model, arch=get_weight_set(model).arch, weights_sha256=weights_sha256(model), state=state
        )
    write_bundle(target, loaded, bases, metadata=metadata or {}, temperature=temperature)


@dataclass
class FittedEnsemble:
    """A fitted job's ensemble: its leaderboard, ranking and predictions, and `save` to one file.

    classes_ : class names; `predict_proba`'s columns follow them.
    ranking_ : the zoo ranking, best first, each model with its best fine-tuned run.
    runs_ : every fine-tune run's record, in planning order.
    ensemble_ : the greedy ensemble's record (members by unit key, budget, front).
    members_ : (artifact or its directory, weight) of each member, as `EnsemblePredictor` takes them.
    ranking_audit_ : how well the ranking predicted the fine-tuned order (`audit_job_ranking`).
    warnings_ : what the submission checks warned about (`checks.check_counts`: split sizes, small classes,
        `k`) and reasons not to trust the ensemble's val numbers (a val split under 50 images, a val
        cross-entropy under 1e-3), as the job records them; by default the ensemble record's.
    job_id, ensemble_id, run_ids_, report_ : where the job is stored, when it was recorded
        (`zooens.fit(record=True)`; `report_` is its `JobReport`); None (and empty) for a fit in memory.
    """

    classes_: list[str]
    ranking_: list[RankingRow]
    runs_: list[RunRecord]
    ensemble_: EnsembleRecord
    members_: list[Member] = field(repr=False)
    ranking_audit_: dict[str, Any] | None = None
    warnings_: list[str] = field(default_factory=list)
    job_id: int | None = None
    ensemble_id: int | None = None
    run_ids_: dict[str, int] = field(default_factory=dict, repr=False)
    report_: Any = field(default=None, repr=False)
    device: str = "cpu"
    _predictor: EnsemblePredictor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.warnings_:  # a job read back from the registry: its own column, else the record's
            job = getattr(self.report_, "job", None)
            self.warnings_ = list(getattr(job, "warnings", None) or self.ensemble_.warnings)

    def leaderboard(self) -> pd.DataFrame:
        """One row for the ensemble, then one per fine-tune run, best validation cross-entropy first:
        model, strategy, val_ce, val_acc, test_acc (NaN without a test split), the temperature fitted on the
        selection rows (val, plus train's cross-fitted held-out rows where the runs are cross-fitted:
        `pipeline.stages.calibrate`) and the calibrated test NLL and ECE (the ensemble's, and each run's own:
        `RunRecord.calibration`; NaN without a test split), ensemble weight, seconds, updated parameters, run id
        (NA for a fit in memory), unit key and hyper-parameters."""
        ens = self.ensemble_
        weights = {m.unit_key: m.weight for m in ens.members}
        runs = {r.unit_key: r for r in self.runs_}
        rows = [
            {
                "model": "ensemble",
                "strategy": "greedy",
                "val_ce": ens.val_ce,
                "val_acc": ens.val_acc,
                "test_acc": ens.test_acc,
                "temperature": ens.temperature,
                "test_nll": ens.test_nll,
                "test_ece": ens.test_ece,
                "weight": 1.0,
                "seconds": np.nan,
                "updated_params": sum(runs[k].updated_params for k in weights if k in runs),
                "run_id": pd.NA,
                "unit_key": pd.NA,
                "hparams": {"size": ens.size},
            }
        ]
        order = {r.unit_key: self.run_ids_.get(r.unit_key, i) for i, r in enumerate(self.runs_)}
        for run in sorted(self.runs_, key=lambda r: (r.val_ce, order[r.unit_key])):
            rows.append(
                {
                    "model": run.model_name,
                    "strategy": run.strategy,
                    "val_ce": run.val_ce,
                    "val_acc": run.val_acc,
                    "test_acc": run.test_acc,
                    "temperature": (run.calibration or {}).get("temperature"),
                    "test_nll": (run.calibration or {}).get("test_nll"),
                    "test_ece": (run.calibration or {}).get("test_ece"),
                    "weight": weights.get(run.unit_key, 0.0),
                    "seconds": run.seconds,
                    "updated_params": run.updated_params,
                    "run_id": self.run_ids_.get(run.unit_key, pd.NA),
                    "unit_key": run.unit_key,
                    "hparams": run.hparams,
                }
            )
        floats = ("test_acc", "val_acc", "temperature", "test_nll", "test_ece")
        return pd.DataFrame(rows).astype(dict.fromkeys(floats, float))

    def ranking(self) -> pd.DataFrame:
        """The zoo ranking: one row per model, best kNN accuracy first (as `zooens jobs show`)."""
        frame = pd.DataFrame([row.model_dump() for row in self.ranking_])
        return frame[["rank", *[c for c in frame.columns if c != "rank"]]] if len(frame) else frame

    @property
    def predictor(self) -> EnsemblePredictor:
        """The ensemble's members, loaded once (the same predictor the API serves)."""
        if self._predictor is None:
            self._predictor = EnsemblePredictor(
                list(self.members_), device=self.device, temperature=self.ensemble_.temperature
            )
        return self._predictor

    def predict_proba(self, images: ImageInputs, *, batch_size: int = 64) -> np.ndarray:
        """Probabilities of shape (n_images, n_classes), columns in `classes_` order; `images` are paths,
        PIL images or uint8 arrays (see `zooens.ensemble.predictor.ImageInputs`). Calibrated: the
        ensemble's temperature (`ensemble_.temperature`, fitted on the selection rows: val, plus train's
        cross-fitted held-out rows where the runs are cross-fitted) is applied."""
        return self.predictor.predict_proba(images, batch_size=batch_size)

    def predict(self, images: ImageInputs, *, batch_size: int = 64) -> list[str]:
        """The most probable class name of each image."""
        return self.predictor.predict(images, batch_size=batch_size)

    def save(self, path: str | os.PathLike, *, base_weights: BaseWeights = "embed") -> Path:
        """Write the ensemble as one `.zooens` file (`zooens.load` reads it back, no registry needed)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        metadata = {
            "job_id": self.job_id,
            "ensemble_id": self.ensemble_id,
            "val_ce": self.ensemble_.val_ce,
            "val_acc": self.ensemble_.val_acc,
            "test_acc": self.ensemble_.test_acc,
            "temperature": self.ensemble_.temperature,
            "test_nll": self.ensemble_.test_nll,
            "test_ece": self.ensemble_.test_ece,
            "warnings": list(self.warnings_),
        }
        try:
            write_ensemble_file(
                self.members_, tmp, base_weights=base_weights, metadata=metadata, temperature=self.ensemble_.temperature
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def score(self, images: ImageInputs, labels: Any, *, batch_size: int = 64) -> dict[str, float]:
        """accuracy, NLL, Brier score and ECE (15 bins) of the calibrated predictions on labelled images, and n
        (`EnsemblePredictor.score`); `labels` are class names or indices, e.g. a pandas column."""
        return self.predictor.score(images, labels, batch_size=batch_size)

    evaluate = score

    def __repr__(self) -> str:
        ens = self.ensemble_
        score = f", val_acc={ens.val_acc:.3f}" if ens.val_acc is not None else ""
        if ens.test_acc is not None:
            score += f", test_acc={ens.test_acc:.3f}"
        where = f"job_id={self.job_id}, ensemble_id={self.ensemble_id}, " if self.job_id is not None else ""
        distinct = len({m.unit_key for m in ens.members})
        return f"FittedEnsemble({where}members={distinct}, classes={len(self.classes_)}{score})"

    def _repr_html_(self) -> str:
        """A notebook's summary: the ensemble's scores and calibration, its members, the top of the ranking
        and the job's warnings."""
        ens = self.ensemble_
        esc = html.escape

        def num(v: float | None, pct: bool = False) -> str:
            if v is None or not np.isfinite(v):
                return "-"
            return f"{100 * v:.1f} %" if pct else f"{v:.3f}"

        runs = {r.unit_key: r for r in self.runs_}
        members = "".join(
            f"<tr><td>{esc(runs[m.unit_key].model_name)}</td><td>{esc(runs[m.unit_key].strategy)}</td>"
            f"<td>{m.weight:.2f}</td><td>{num(runs[m.unit_key].val_acc, True)}</td></tr>"
            for m in ens.members
            if m.unit_key in runs
        )
        ranking = "".join(
            f"<tr><td>{row.rank}</td><td>{esc(row.model_name)}</td><td>{num(row.knn_accuracy, True)}</td></tr>"
            for row in self.ranking_[:5]
        )
        warnings = "".join(f"<li>{esc(w)}</li>" for w in self.warnings_)
        where = f" (job {self.job_id})" if self.job_id is not None else ""
        return (
            f"<div class='zooens-fitted'><strong>zooens ensemble{where}</strong>: {len(self.classes_)} classes, "
            f"{len({m.unit_key for m in ens.members})} distinct runs<br>"
            f"val accuracy {num(ens.val_acc, True)}, test accuracy {num(ens.test_acc, True)}, "
            f"test NLL {num(ens.test_nll)}, test ECE {num(ens.test_ece, True)}, temperature {num(ens.temperature)}"
            "<table><thead><tr><th>model</th><th>strategy</th><th>weight</th><th>val acc.</th></tr></thead>"
            f"<tbody>{members}</tbody></table>"
            "<table><thead><tr><th>rank</th><th>model</th><th>kNN acc.</th></tr></thead>"
            f"<tbody>{ranking}</tbody></table>"
            + (f"<ul class='zooens-warnings'>{warnings}</ul>" if warnings else "")
            + "</div>"
        )


def fit(
    dataset: ImageDataset,
    params: JobParams | None = None,
    *,
    zoo: str | list[str] = "embedded",
    device: str | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
) -> FittedEnsemble:
    """Run a whole job on `dataset` in this process and keep it in memory: rank every model of `zoo`,
    fine-tune the sweep over the top-K, select the greedy ensemble, audit the ranking; with `params.pull`,
    fetch the zoo's missing weights from the Hugging Face hub first.

    Everything the job can know before it starts is checked first (parameters, split sizes and `k`
    against the class counts, the zoo's size and weights). Files: only the embedding cache
    (`cache`, by default ZOOENS_HOME's); no database, no run folder. `progress`: the fit's units reported as a
    recorded job's are (`zooens.progress.UnitProgress`, the same words and the ETA by unit kind): a bar on a
    terminal, the current unit beside it, with the bars inside a unit (a model's images embedded, a run's
    steps) nested under it; one `tqdm.auto` bar in a notebook; one plain line per finished unit otherwise
    (piped, redirected, TERM=dumb), never a carriage return or an escape code.
    """
    params = JobParams() if params is None else params
    settings = get_settings()
    warnings = check_counts(dataset.name, dataset.summary().get("counts", {}), params)
    weight_sets, zoo_warnings = job_zoo(zoo, params)
    warnings += zoo_warnings
    models = [ws.name for ws in weight_sets]
    ds = prepare_job_dataset(dataset, params)
    device = resolve_device(device or settings.device)
    cache = EmbeddingCache(settings.resolved_cache_dir) if cache is None else cache
    pulls = plan_pull_units(models, params)
    planned = [
        *pulls,
        *(UnitKey.embed(m) for m in models),
        *plan_finetune_units(models, params, device),  # the sweep's kinds do not depend on the ranking's order
        UnitKey.ensemble(),
    ]
    inner = inner_bars(progress)  # a unit's own bars: on a terminal only, as in a recorded job
    with UnitProgress([unit_kind(k) for k in planned], desc="fit", enabled=progress) as bar:

        def begin(key: UnitKey) -> None:
            bar.begin(unit_label(key))

        def done(key: UnitKey) -> None:
            bar.done(unit_kind(key), unit_label(key))

        for key in pulls:
            assert key.model_name is not None
            begin(key)
            pull_weights(key.model_name, progress=inner)
            done(key)
        scores: list[ScoreRecord] = []
        for model_name in models:
            key = UnitKey.embed(model_name)
            begin(key)
            scores.append(
                rank_model(ds, model_name, params, cache=cache, device=device, progress=inner).part(ScoreRecord)
            )
            done(key)
        ranked = rank_models(scores)
        scores.sort(key=lambda r: ranked.index(r.model_name))
        runs: dict[str, RunRecord] = {}
        kept: dict[str, Any] = {}
        for key in plan_finetune_units(ranked, params, device):
            begin(key)
            record, result = finetune_run(
                ds,
                key,
                params,
                selected_models=ranked[: params.top_k],
                cache=cache,
                device=device,
                progress=inner,
            )
            runs[record.unit_key] = record
            kept[record.unit_key] = result
            done(key)
        begin(UnitKey.ensemble())
        candidates = [runs[str(k)] for k in plan_finetune_units(ranked, params, device, audit=False)]
        probs = [probabilities(kept[r.unit_key]) for r in candidates]
        ensemble = select_ensemble(candidates, probs, ds, params)
        done(UnitKey.ensemble())
    all_runs = list(runs.values())
    return FittedEnsemble(
        classes_=list(ds.classes),
        ranking_=ranking_table(scores, all_runs),
        runs_=all_runs,
        ensemble_=ensemble,
        members_=[(kept[m.unit_key].artifact, m.weight) for m in ensemble.members],
        ranking_audit_=audit_job_ranking(scores, all_runs, params),
        warnings_=[*warnings, *(w for w in ensemble.warnings if w not in warnings)],
        device=device,
    )
