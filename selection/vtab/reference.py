"""Published VTAB-1k numbers to print beside ours: Mustafa et al. 2020, "Deep Ensembles for Low-Data
Transfer Learning" (arXiv 2010.06866), the method zooens implements.

What we could read, verbatim, in a retrieved source, and use:

- The 19-task mean, 77.6 (top-1 accuracy, %): Papers with Code's page of the paper,
  https://www.paperswithcode.com/paper/deep-ensembles-for-low-data-transfer-learning-1 ("Results from
  the Paper": "Image Classification VTAB-1k ExpertEnsembles R101 Top-1 Accuracy 77.6"), the mean
  zooens issue 12 quotes too.

What we could not, and so leave empty (None), never filled from memory:

- The paper's per-task numbers (its VTAB-1k table, one column per task). The stored copies of the
  paper we could retrieve (arXiv/ar5iv, the ICLR 2021 submission text) returned only their opening
  pages, never the table. The fallback the issue names, per-task VTAB-1k numbers of a baseline of the
  VTAB paper (Zhai et al. 2019, arXiv 1910.04867), was not found verbatim either: task_adaptation's
  README holds no numbers, and the one per-task leaderboard copy we found
  (github.com/agosiewska/EPP-meta-score, data/VTAB_leaderboard.csv) is the full-data leaderboard
  (e.g. dSprites location at 100), not VTAB-1k, so it cannot stand beside 1k results.

A later change that reads the per-task table in a source it can cite fills `PER_TASK` (keys: the
task names of `tasks.TASKS`) and names the source here; the results table then shows each task's
reference and the group means of those references.
"""

from __future__ import annotations

__all__ = ["REFERENCE_NAME", "REFERENCE_CITATION", "REFERENCE_SOURCE", "REFERENCE_MEAN", "PER_TASK", "reference_for"]

REFERENCE_NAME = "Mustafa et al. 2020"
REFERENCE_CITATION = "arXiv 2010.06866; its mean as Papers with Code lists it"
REFERENCE_SOURCE = (
    "https://www.paperswithcode.com/paper/deep-ensembles-for-low-data-transfer-learning-1 (arXiv 2010.06866)"
)
REFERENCE_MEAN: float | None = 77.6
"""The 19-task mean top-1 accuracy (%) of the paper's ensembles (ExpertEnsembles, R101)."""

PER_TASK: dict[str, float | None] = {
    name: None
    for name in (
        "caltech101",
        "cifar100",
        "dtd",
        "oxford_flowers102",
        "oxford_iiit_pet",
        "sun397",
        "svhn",
        "patch_camelyon",
        "eurosat",
        "resisc45",
        "diabetic_retinopathy",
        "clevr_count",
        "clevr_distance",
        "dmlab",
        "kitti_distance",
        "dsprites_location",
        "dsprites_orientation",
        "smallnorb_azimuth",
        "smallnorb_elevation",
    )
}
"""Per-task top-1 accuracy (%) of the reference; None where no source could be read (all, for now)."""


def reference_for(task: str) -> float | None:
    """The reference's accuracy (%) on a VTAB task, None when unknown (or not a VTAB task)."""
    return PER_TASK.get(task)
