"""A job records the train and val sizes it really used, beside the ones asked for: on a 99-image folder the
default 800/200 asked for becomes 79/20 drawn, and the job, the API's JobPublic and the report say so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.service.cli import app


def _image_folder(root: Path, per_class: int, classes: int) -> str:
    """A real ImageFolder, train only (no split folders): the job draws train and val from it."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return str(root)


def test_a_job_records_the_sizes_it_drew(zooens_home, db_url, tmp_path):
    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.reports import JobPublic

    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    folder = _image_folder(tmp_path / "photos", per_class=33, classes=3)  # 99 images
    args = ["run", "--dataset", folder, "--zoo", "user", "--resolution", "32", "--steps", "5", "--lr", "0.1"]
    result = CliRunner().invoke(app, [*args, "--top-k", "1", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["job"]
    assert (job["params"]["n_train"], job["params"]["n_val"]) == (800, 200)  # asked for
    assert (job["n_train_used"], job["n_val_used"]) == (79, 20)  # drawn: 99 images in the same proportion
    with session_scope() as s:
        row = registry.get_job(s, job["id"])
        assert (row.n_train_used, row.n_val_used) == (79, 20)
        assert JobPublic.model_validate(row).n_train_used == 79


def test_split_sizes_are_stored_and_none_before(db_url):
    from zooens.errors import NotFoundError
    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.reports import JobPublic

    with session_scope() as s:
        ds = registry.create_dataset(s, name="d", source="/d", fingerprint="f" * 64, classes=["a"], counts={})
        job_id = registry.create_job(s, dataset_id=ds.id, zoo="embedded", zoo_models=[], params={"n_train": 800}).id
    with session_scope() as s:
        public = JobPublic.model_validate(registry.get_job(s, job_id))
        assert (public.n_train_used, public.n_val_used) == (None, None)
        registry.set_job_split_sizes(s, job_id, n_train=79, n_val=20)
        with pytest.raises(NotFoundError):
            registry.set_job_split_sizes(s, job_id + 1, n_train=1, n_val=1)
    with session_scope() as s:
        public = JobPublic.model_validate(registry.get_job(s, job_id))
        assert (public.n_train_used, public.n_val_used, public.params) == (79, 20, {"n_train": 800})
