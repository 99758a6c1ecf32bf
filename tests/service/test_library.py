"""The Python API: fit in-process on the embedded registry, read the leaderboard, save one file, load it in a
fresh process (no registry) and get the probabilities of the server's predictor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import zooens
from tests.service._tiny import TINY_FIT, register_tiny_zoo
from zooens.selection.datasets import load_dataset
from zooens.selection.images import open_image

FIT = {
    **TINY_FIT,
    "taps": "none",  # the two models are the runs' models below
    "top_k": 2,
    "strategies": "linear,patch",
    "steps": [3],
    "n_train": 120,
    "max_test": 40,
    "ensemble_size": 4,
}
ARRAYS_FIT = {**TINY_FIT, "max_test": None}
"""The tiny job on arrays, whose test split is given whole."""


def _write_images(ds, folder: Path, n: int = 5) -> list[str]:
    folder.mkdir()
    split = ds.split("test")
    paths = []
    for i in range(n):
        path = folder / f"{i}-{ds.classes[split.labels[i]]}.png"
        split.image(i).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_fit_save_load_in_a_fresh_process_matches_the_servers_predictor(zooens_home, tmp_path):
    from zooens.service.api.routes.ensembles import predictor_for
    from zooens.service.db.session import session_scope

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet", "tiny-resnet"])
    fitted = zooens.fit("digits", **FIT)
    assert isinstance(fitted, zooens.FittedEnsemble)

    board = fitted.leaderboard()
    assert isinstance(board, pd.DataFrame)
    assert board.iloc[0]["model"] == "ensemble"
    runs = board.iloc[1:]
    assert set(runs["strategy"]) == {"linear", "patch"} and set(runs["model"]) == {"tiny-effnet", "tiny-resnet"}
    assert list(runs["val_ce"]) == sorted(runs["val_ce"])
    assert runs["weight"].sum() == pytest.approx(1.0)
    assert list(fitted.ranking()["model_name"])[:1] and len(fitted.ranking()) == 2

    images = _write_images(load_dataset("digits"), tmp_path / "images")
    with session_scope() as s:
        server = predictor_for(s, fitted.ensemble_id).predict_proba([open_image(p) for p in images])
    np.testing.assert_allclose(fitted.predict_proba(images), server, atol=1e-6)
    assert fitted.predict(images) == [fitted.classes_[i] for i in server.argmax(axis=1)]

    path = fitted.save(tmp_path / "digits.zooens")
    os.replace(zooens_home / "zooens.db", tmp_path / "moved-away.db")  # no registry from here on
    empty_home = tmp_path / "elsewhere"  # and no zoo: the tiny user models exist only in the file
    script = (
        "import json, sys, zooens; p = zooens.load(sys.argv[1]); "
        "print(json.dumps({'classes': p.classes, 'proba': p.predict_proba(sys.argv[2:]).tolist()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), *images],
        capture_output=True,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "ZOOENS_HOME": str(empty_home)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["classes"] == fitted.classes_
    np.testing.assert_allclose(np.array(loaded["proba"]), server, atol=1e-5)


def test_fit_takes_arrays_and_refuses_what_it_cannot_use(zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    ds = load_dataset("digits")
    train, test = ds.split("train"), ds.split("test")
    fitted = zooens.fit(
        train.images[:150],
        train.labels[:150],
        test=(test.images[:30], test.labels[:30]),
        classes=ds.classes,
        **ARRAYS_FIT,
    )
    assert fitted.classes_ == ds.classes
    assert len(fitted.predict(test.images[:3])) == 3
    assert fitted.predict_proba(test.images[0]).shape == (1, len(ds.classes))
    with pytest.raises(zooens.ConfigError, match="top_k"):
        zooens.fit("digits", zoo="user", top_k=0)
    with pytest.raises(zooens.DatasetError, match="labels"):
        zooens.fit(train.images[:10])
    with pytest.raises(zooens.DatasetError, match="uint8"):
        zooens.fit(train.images[:10].astype(np.float32), train.labels[:10])


def test_top_level_api_is_light_and_timm_like():
    assert {"fit", "load", "list_models", "load_dataset", "__version__"} <= set(zooens.__all__)
    assert "tf_efficientnet_lite0.in1k" in zooens.list_models("tf_efficientnet_lite*")
    assert zooens.load_dataset("digits").classes
    out = subprocess.run(
        [sys.executable, "-c", "import sys, zooens; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def _arrays_fit(**over):
    ds = load_dataset("digits")
    train, test = ds.split("train"), ds.split("test")
    kwargs = dict(
        test=(test.images[:30], test.labels[:30]),
        classes=ds.classes,
        **{**ARRAYS_FIT, "top_k": 2, "learning_rates": [0.1, 0.01]},
    )
    return zooens.fit(train.images[:150], train.labels[:150], **{**kwargs, **over})


@pytest.mark.slow
def test_fit_in_memory_needs_no_database_and_matches_the_recorded_job(tmp_path, monkeypatch):
    """record=False runs with ZOOENS_DATABASE_URL unreachable and writes no database file; the same inputs
    give the recorded job's ranking, runs and ensemble."""
    from zooens.settings import get_settings

    recorded_home, memory_home = tmp_path / "recorded", tmp_path / "memory"

    def use(home):
        home.mkdir()
        monkeypatch.setenv("ZOOENS_HOME", str(home))
        get_settings.cache_clear()
        register_tiny_zoo(home / "weights", ["tiny-effnet", "tiny-resnet"])

    use(recorded_home)
    recorded = _arrays_fit()
    use(memory_home)
    monkeypatch.setenv("ZOOENS_DATABASE_URL", "postgresql+psycopg2://nobody@127.0.0.1:9/unreachable")
    get_settings.cache_clear()
    try:
        with pytest.raises(Exception, match="(?i)connect"):  # the database is really unreachable
            zooens.fit("digits", zoo="user", top_k=1, progress=False)
        memory = _arrays_fit(record=False)
    finally:
        get_settings.cache_clear()

    assert memory.job_id is None and memory.report_ is None and recorded.job_id is not None
    assert not [p for p in memory_home.rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3")]
    assert not (memory_home / "arrays").exists()  # nothing written for a job to reload
    assert [r.model_name for r in memory.ranking_] == [r.model_name for r in recorded.ranking_]
    assert [r.knn_accuracy for r in memory.ranking_] == pytest.approx([r.knn_accuracy for r in recorded.ranking_])
    assert {r.unit_key: r.val_ce for r in memory.runs_} == pytest.approx({r.unit_key: r.val_ce for r in recorded.runs_})
    assert [(m.unit_key, m.weight) for m in memory.ensemble_.members] == [
        (m.unit_key, pytest.approx(m.weight)) for m in recorded.ensemble_.members
    ]
    assert memory.ensemble_.val_ce == pytest.approx(recorded.ensemble_.val_ce)
    assert memory.ranking_audit_ == recorded.ranking_audit_ and memory.ranking_audit_ is not None
    board = memory.leaderboard()
    assert board.iloc[0]["model"] == "ensemble" and board["run_id"].isna().all()
    assert list(board.iloc[1:]["unit_key"]) == list(recorded.leaderboard().iloc[1:]["unit_key"])
    images = load_dataset("digits").split("test").images[30:35]
    np.testing.assert_allclose(memory.predict_proba(images), recorded.predict_proba(images), atol=1e-5)
    path = memory.save(tmp_path / "memory.zooens")
    np.testing.assert_allclose(zooens.load(str(path)).predict_proba(images), recorded.predict_proba(images), atol=1e-5)
