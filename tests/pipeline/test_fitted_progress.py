"""`zooens.pipeline.fit` reports its units as a recorded job does (`zooens.progress.UnitProgress`): plain
lines when stderr is not a terminal, one bar in a notebook, the units in words."""

from __future__ import annotations

import re

import pytest
import tqdm.auto

import zooens.progress
from tests.pipeline.test_fitted import PARAMS, _digits
from tests.service._tiny import register_tiny_zoo
from zooens.pipeline import JobParams, fit
from zooens.progress import BARS, NOTEBOOK

MODELS = ["tiny-effnet", "tiny-resnet"]
WORDS = [
    *(f"embed and rank {m}" for m in MODELS),
    *(f"fine-tune {m} linear lr=0.1 steps=5" for m in MODELS),
    "build the ensemble",
]
"""Each unit of the fit, in `unit_label`'s words: 2 models ranked, 2 runs, the ensemble."""
LINE = re.compile(r"\[(\d+)/(\d+)\] (.+) done in (?:\S+ s|\d+:\d\d)(?: \(ETA .+\))?")
"""`UnitProgress`'s line for a finished unit: position, total, the unit in words, its time, the ETA."""


def test_a_piped_fit_writes_one_plain_line_per_unit_in_words(zooens_home, capsys):
    register_tiny_zoo(zooens_home / "weights", MODELS)
    fit(_digits(), JobParams(**PARAMS, audit_ranking=0), zoo="user", progress=True)
    err = capsys.readouterr().err  # captured: not a terminal, as a pipe or a log file
    assert "\r" not in err and "\x1b" not in err  # no bar redrawn, no cursor or colour code
    lines = [line for line in err.splitlines() if line.strip()]
    units = [m for m in map(LINE.fullmatch, lines) if m]
    assert len(units) == len(WORDS) and len(lines) <= len(WORDS) + 2, err  # one line a unit, little else
    assert [(int(m[1]), int(m[2])) for m in units] == [(n, len(WORDS)) for n in range(1, len(WORDS) + 1)], err
    said = [m[3] for m in units]  # in words, in the order they ran (the runs follow the ranking)
    assert sorted(said) == sorted(WORDS) and said[-1] == "build the ensemble", err
    assert all(w.startswith("embed and rank ") for w in said[:2]), err
    assert not any(re.search(r"\b(embed|finetune|ensemble):", line) for line in lines), err  # no raw unit key
    assert "(ETA " in units[0][0] and "ETA" not in units[-1][0]  # by unit kind while units remain, none after


@pytest.mark.parametrize("mode", [NOTEBOOK, BARS])
def test_a_fit_draws_one_bar_in_a_notebook_and_nests_a_units_bars_on_a_terminal(zooens_home, monkeypatch, mode):
    register_tiny_zoo(zooens_home / "weights", MODELS)
    monkeypatch.setattr(zooens.progress, "display", lambda *args, **kwargs: mode)
    shown = []
    init = tqdm.auto.tqdm.__init__

    def spy(self, *args, **kwargs):  # every module's `tqdm.auto.tqdm` is this class
        if not kwargs.get("disable", False):  # a bar asked for (the tests' TQDM_DISABLE=1 then hides it)
            shown.append(kwargs.get("desc"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(tqdm.auto.tqdm, "__init__", spy)
    fit(_digits(), JobParams(**PARAMS, audit_ranking=0), zoo="user", progress=True)
    if mode == NOTEBOOK:  # the fit's bar alone: no widget per model embedded or per run trained
        assert shown == ["fit"]
    else:  # as a recorded job's: the bars inside a unit (a model's images embedded) under the fit's
        assert shown[0] == "fit" and {f"{m} {split}" for m in MODELS for split in ("train", "val")} <= set(shown)
