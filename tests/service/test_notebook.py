"""zooens in a real Jupyter kernel (`nbclient`): a fit shows one progress bar, not nested text bars, and the
fitted ensemble shows an HTML summary."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

WIDGET = "application/vnd.jupyter.widget-view+json"

SETUP = """
import os
from tests.service._tiny import register_tiny_zoo
register_tiny_zoo(os.path.join(os.environ["ZOOENS_HOME"], "weights"), ["tiny-resnet", "tiny-effnet"])
import zooens
from zooens.selection.datasets import load_dataset
ds = load_dataset("digits")
train = ds.split("train")
"""

FIT = """
fitted = zooens.fit(train.images[:150], [ds.classes[y] for y in train.labels[:150]], zoo="user", top_k=2,
                    strategies="linear", resolution=32, n_train=100, n_val=40, record={record})
"""


def _run(cells: list[str], home: Path) -> list:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    env = {**os.environ, "ZOOENS_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": "."}})
    old = os.environ.copy()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb.cells


def _bars(outputs: list) -> tuple[int, list[str]]:
    """(progress widgets shown, the text written to stderr)."""
    widgets = sum(1 for o in outputs if WIDGET in o.get("data", {}))
    text = [o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    return widgets, text


@pytest.mark.slow
@pytest.mark.parametrize("record", [False, True], ids=["in-memory", "recorded"])
def test_a_fit_in_a_notebook_shows_one_bar_and_an_html_summary(tmp_path, record):
    if "ipykernel" not in sys.modules:
        import ipykernel  # noqa: F401  (the kernel spec the client starts)
    cells = _run([SETUP, FIT.format(record=record), "fitted"], tmp_path / "home")
    widgets, stderr = _bars(cells[1].outputs)
    assert widgets == 1, json.dumps(cells[1].outputs)[:2000]
    assert not any("%|" in t or "\r" in t for t in stderr), stderr  # no text bars beside the widget
    shown = cells[2].outputs[0]["data"]
    assert "text/html" in shown and "zooens ensemble" in shown["text/html"] and "<table>" in shown["text/html"]
    assert shown["text/plain"].startswith("FittedEnsemble(")
