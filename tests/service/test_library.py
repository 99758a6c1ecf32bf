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
from tests.service._tiny import register_tiny_zoo
from zooens.selection.datasets import load_dataset
from zooens.selection.images import open_image

FIT = dict(
    zoo="user",
    top_k=2,
    strategies="linear,patch",
    steps=[3],
    resolution=32,
    n_train=120,
    n_val=40,
    max_test=40,
    ensemble_size=4,
    progress=False,
)


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
        zoo="user",
        top_k=1,
        strategies="linear",
        steps=[5],
        resolution=32,
        n_train=100,
        n_val=40,
        progress=False,
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
