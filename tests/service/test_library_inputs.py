"""The Python API with a practitioner's inputs: string labels end to end, a pandas column of image paths,
`score`, and how a fitted ensemble and a loaded predictor show themselves (`repr`, `_repr_html_`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import zooens
from tests.service._tiny import register_tiny_zoo
from zooens.selection.datasets import load_dataset

NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
TINY = dict(zoo="user", top_k=1, strategies="linear", resolution=32, n_train=100, n_val=40, progress=False)


def _reference(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """accuracy, NLL and 15-bin ECE computed here, from their definitions."""
    conf, pred = proba.max(1), proba.argmax(1)
    ece = 0.0
    for m in range(15):
        inside = (conf > m / 15) & (conf <= (m + 1) / 15)
        if inside.any():
            ece += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    nll = float(np.mean(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))
    return {"accuracy": float((pred == y).mean()), "nll": nll, "ece": float(ece)}


def test_string_labels_work_end_to_end_with_score_and_a_summary(zooens_home, tmp_path):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    ds = load_dataset("digits")
    train, test = ds.split("train"), ds.split("test")
    fitted = zooens.fit(
        train.images[:150],
        list(NAMES[train.labels[:150]]),
        test=(test.images[:40], pd.Series(NAMES[test.labels[:40]], name="digit")),
        record=False,
        **TINY,
    )
    assert fitted.classes_ == sorted(NAMES.tolist())  # names sorted, as ImageFolder sorts folders
    predicted = fitted.predict(test.images[40:60])
    assert set(predicted) <= set(NAMES)

    images, names = test.images[40:100], NAMES[test.labels[40:100]]
    got = fitted.score(images, pd.Series(names, name="digit"))
    y = np.array([fitted.classes_.index(n) for n in names])
    want = _reference(fitted.predict_proba(images).astype(np.float64), y)
    assert got["n"] == 60
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["nll"] == pytest.approx(want["nll"], rel=1e-5)
    assert got["ece"] == pytest.approx(want["ece"], abs=1e-6)
    assert fitted.evaluate(images, y) == got  # indices work as well as names

    with pytest.raises(zooens.ConfigError, match="'eleven'"):
        fitted.score(images[:2], ["one", "eleven"])
    with pytest.raises(zooens.DatasetError, match="column 'digit' label 1"):
        zooens.fit(train.images[:3], pd.Series(["one", None, "two"], name="digit"), record=False, **TINY)
    with pytest.raises(zooens.DatasetError, match="'eleven'"):
        zooens.fit(train.images[:2], ["one", "eleven"], classes=["one", "two"], record=False, **TINY)

    text = repr(fitted)
    assert text.startswith("FittedEnsemble(") and "classes=10" in text and "\n" not in text
    page = fitted._repr_html_()
    assert "<table>" in page and "tiny-resnet" in page and "test accuracy" in page
    assert f"{100 * fitted.ensemble_.test_acc:.1f} %" in page

    loaded = zooens.load(str(fitted.save(tmp_path / "digits.zooens")))
    assert loaded.score(images, names) == pytest.approx(got)
    assert repr(loaded).startswith("EnsemblePredictor(members=1 (linear: 1), classes=10")
    assert "tiny-resnet" in loaded._repr_html_() and "<table>" in loaded._repr_html_()


def test_a_pandas_column_of_paths_is_a_dataset_a_recorded_job_reloads(zooens_home, tmp_path):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    ds = load_dataset("digits")
    rows = []
    for split, n in (("train", 140), ("test", 30)):
        sp = ds.split(split)
        folder = tmp_path / split
        folder.mkdir()
        for i in range(n):
            path = folder / f"{i}.png"
            sp.image(i).save(path)
            rows.append({"file": str(path), "label": NAMES[sp.labels[i]], "split": split})
    frame = pd.DataFrame(rows)
    train, test = frame[frame.split == "train"], frame[frame.split == "test"]
    fitted = zooens.fit(train["file"], train["label"], test=(test["file"], test["label"]), **TINY)
    assert fitted.job_id is not None and fitted.classes_ == sorted(NAMES.tolist())
    assert fitted.ensemble_.test_acc is not None
    report = fitted.score(test["file"], test["label"])
    assert report["n"] == 30 and report["accuracy"] == pytest.approx(fitted.ensemble_.test_acc, abs=1e-9)
    with pytest.raises(zooens.DatasetError, match="column 'file' row 1"):
        zooens.fit(pd.Series([str(tmp_path / "train" / "0.png"), str(tmp_path / "nope.png")], name="file"), ["a", "b"])
