"""The offline suite: deterministic, loadable in the exported layout, labels true to the pictures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from zooens.errors import DatasetError
from zooens.selection.datasets import load_dataset
from zooens.selection.vtab.offline import OFFLINE_TASKS, make_offline_suite, render_sprite, sprite_centre_x
from zooens.selection.vtab.sources import load_exported_task


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    make_offline_suite(root, seed=1, n_test=60)
    return root


def test_suite_loads_with_the_right_shapes(suite):
    for task in OFFLINE_TASKS:
        ds = load_exported_task(suite, task)
        assert {k: len(v) for k, v in ds.splits.items()} == {"train": 800, "val": 200, "test": 60}
        assert json.loads((suite / task / "task.json").read_text())["stand_in"] is True
        assert ds.extra["group"] == OFFLINE_TASKS[task]
        assert load_dataset(suite / task).fingerprint == ds.fingerprint  # load_dataset knows the layout
    assert load_exported_task(suite, "offline-clevr-count").classes == [str(i) for i in range(3, 11)]
    with pytest.raises(DatasetError, match="make-offline-suite"):
        load_exported_task(suite, "svhn")


def test_deterministic_for_a_seed(suite, tmp_path):
    make_offline_suite(tmp_path / "a", seed=1, n_test=60, tasks=["offline-dsprites-location", "offline-clevr-count"])
    for task in ("offline-dsprites-location", "offline-clevr-count"):
        assert load_exported_task(tmp_path / "a", task).fingerprint == load_exported_task(suite, task).fingerprint
    make_offline_suite(tmp_path / "b", seed=2, n_test=60, tasks=["offline-dsprites-location"])
    assert (
        load_exported_task(tmp_path / "b", "offline-dsprites-location").fingerprint
        != load_exported_task(suite, "offline-dsprites-location").fingerprint
    )


def test_dsprites_location_labels_match_the_rendered_position(suite):
    ds = load_exported_task(suite, "offline-dsprites-location")
    sp = ds.split("train")
    exact = 0
    for i in range(300):
        cols = np.nonzero(sp.images[i] > 127)[1]
        bin_hat = (cols.mean() - 6) / (64 - 12) * 16  # the pixel centroid mapped back to bins
        near_edge = abs(bin_hat - round(bin_hat)) < 0.3
        assert sp.labels[i] == min(int(bin_hat), 15) or (near_edge and abs(sp.labels[i] + 0.5 - bin_hat) < 0.8), i
        exact += int(sp.labels[i] == min(int(bin_hat), 15))
    assert exact >= 270


def test_sprite_rendering_centre():
    img = render_sprite(0.25, 0.5, angle=0.0, scale=0.15)
    cols = np.nonzero(img > 127)[1]
    assert abs(cols.mean() - sprite_centre_x(0.25)) < 1.0  # symmetric about its vertical axis at angle 0
    rotated = render_sprite(0.25, 0.5, angle=math.pi, scale=0.15)
    assert not np.array_equal(img, rotated)  # no 180-degree symmetry: orientation is learnable


def test_clevr_count_labels_match_the_number_of_objects(suite):
    from scipy import ndimage

    sp = load_exported_task(suite, "offline-clevr-count").split("train")
    hits = 0
    for i in range(100):
        background = np.all(sp.images[i] == 110, axis=-1)
        n_blobs = ndimage.label(~background)[1]
        hits += int(n_blobs == sp.labels[i] + 3)
    assert hits == 100  # objects are placed 15 px apart and are at most 10 px wide: they never touch


def test_exported_tasks_carry_their_flip_declarations(tmp_path):
    """The stand-ins' task.json declares what the VTAB task they stand in for declares; loading puts it in extra."""
    from zooens.selection.datasets import load_exported_task
    from zooens.selection.vtab.offline import make_offline_suite
    from zooens.selection.vtab.tasks import get_task

    make_offline_suite(tmp_path, n_test=20, tasks=["offline-dsprites-location"])
    extra = load_exported_task(tmp_path, "offline-dsprites-location").extra
    assert extra["flip_preserves_label"] is False and extra["crop_preserves_label"] is False
    assert get_task("dsprites_location").declarations == {"flip_preserves_label": False, "crop_preserves_label": False}
