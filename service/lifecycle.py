"""Deleting jobs and datasets: their rows first, then their files.

A job's files are its folder of runs and artifacts (`JobSpec.job_dir`); an uploaded dataset's
are its stored copy (`Dataset.storage_path`, removed only when it lies under the uploads
folder: a dataset registered from a server path is never touched) and its thumbnails (shared
by every dataset with the same content, so removed with the last of them). The rows are
committed before any file is removed: a delete that fails leaves everything in place, and
files left behind by a failure after the commit are only disk space.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from zooens.service import registry
from zooens.service.db.models import Dataset
from zooens.service.jobs.units import job_folder
from zooens.service.thumbnails import thumbnails_dir
from zooens.service.uploads import datasets_root
from zooens.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["delete_dataset", "delete_job", "job_dir"]


def job_dir(settings: Settings, job_id: int) -> Path:
    """The folder of a job's runs and artifacts (the same as its `JobSpec.job_dir`)."""
    return job_folder(settings.home.resolve(), job_id)


def delete_job(s: Session, job_id: int, settings: Settings) -> None:
    """Delete a finished job's rows (cascading to its units, scores, runs and ensembles), commit, then its folder.

    ConflictError for a queued or running job (cancel it first); NotFoundError for no such job.
    """
    registry.delete_job(s, job_id)
    s.commit()
    _remove(job_dir(settings, job_id))


def delete_dataset(s: Session, dataset_id: int, settings: Settings, *, with_jobs: bool = False) -> list[int]:
    """Delete a dataset's row and, with `with_jobs`, its finished jobs; commit; then their files.

    Returns the ids of the jobs deleted. ConflictError while a queued or running job uses the
    dataset, or while finished ones do and `with_jobs` is not given (`registry.delete_dataset`).
    """
    row, job_ids = registry.delete_dataset(s, dataset_id, with_jobs=with_jobs)
    shared = s.scalar(select(Dataset.id).where(Dataset.fingerprint == row.fingerprint).limit(1)) is not None
    s.commit()
    for job_id in job_ids:
        _remove(job_dir(settings, job_id))
    if row.storage_path:
        stored = Path(row.storage_path).resolve()
        uploads = datasets_root(settings).resolve()
        if stored != uploads and stored.is_relative_to(uploads):
            _remove(stored)
        else:
            logger.warning(
                "dataset %s: its files at %s are not under the uploads folder %s; left in place",
                dataset_id,
                stored,
                uploads,
            )
    if not shared:
        _remove(thumbnails_dir(settings, row.fingerprint))
    return job_ids


def _remove(folder: Path) -> None:
    if folder.is_symlink() or folder.is_file():
        folder.unlink(missing_ok=True)
    elif folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            logger.warning("could not remove %s entirely; remove it by hand", folder)
