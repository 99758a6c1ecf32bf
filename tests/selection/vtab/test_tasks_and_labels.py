"""The task table and the structured tasks' label derivations, against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zooens.errors import ConfigError
from zooens.selection.vtab import labels as L
from zooens.selection.vtab.tasks import TASKS, get_task, resolve_tasks


def test_table_has_the_19_tasks_in_their_groups():
    assert len(TASKS) == 19 and len({t.name for t in TASKS}) == 19
    groups = {g: [t.name for t in TASKS if t.group == g] for g in ("natural", "specialized", "structured")}
    assert [len(v) for v in groups.values()] == [7, 4, 8]
    classes = {t.name: t.num_classes for t in TASKS}
    assert classes["cifar100"] == 100 and classes["sun397"] == 397 and classes["clevr_count"] == 8
    assert classes["clevr_distance"] == 6 and classes["kitti_distance"] == 4 and classes["dsprites_location"] == 16
    assert classes["smallnorb_azimuth"] == 18 and classes["smallnorb_elevation"] == 9 and classes["dmlab"] == 6
    assert get_task("caltech101").train800 == "train[0:800]"
    assert get_task("caltech101").val200 == "train[2754:2954]"
    assert get_task("dtd").val200 == "validation[:200]"
    assert [t.name for t in resolve_tasks("specialized")][0] == "patch_camelyon"
    assert [t.name for t in resolve_tasks("dtd, svhn")] == ["dtd", "svhn"]
    with pytest.raises(ConfigError, match="cifar100"):
        resolve_tasks("cifar10O")


def test_clevr_count():
    assert [L.clevr_count(n) for n in range(3, 11)] == list(range(8))
    with pytest.raises(ValueError):
        L.clevr_count(2)


@pytest.mark.parametrize(
    "depth, label",
    [
        (0.1, 0),
        (7.99, 0),
        (8.0, 0),
        (8.01, 1),
        (8.5, 1),
        (8.7, 2),
        (9.2, 3),
        (9.7, 4),
        (10.0, 4),
        (10.5, 5),
        (99.0, 5),
        (150.0, 5),
    ],
)
def test_clevr_distance_bins(depth, label):
    coords = np.array([[10.0, 20.0, depth + 3.0], [5.0, 5.0, depth]])  # the closest object decides
    assert L.clevr_distance(coords) == label


@pytest.mark.parametrize(
    "types, depths, label",
    [
        ([0], [5.0], 0),
        ([1], [8.0], 0),
        ([2], [8.1], 1),
        ([0, 0], [30.0, 19.9], 1),
        ([0], [20.5], 2),
        ([3, 0], [2.0, 25.0], 2),  # a pedestrian close by does not count
        ([3, 5], [2.0, 3.0], 3),
        ([], [], 3),
        ([0], [999.5], 3),
    ],  # no vehicle or beyond 999 m: class 3
)
def test_kitti_distance(types, depths, label):
    locations = np.array([[0.0, 0.0, d] for d in depths]).reshape(-1, 3)
    assert L.kitti_distance(np.array(types), locations) == label


def test_dsprites_bins():
    assert [L.dsprites_location(v) for v in (0, 1, 2, 3, 30, 31)] == [0, 0, 1, 1, 15, 15]
    orient = [L.dsprites_orientation(v) for v in range(40)]
    assert orient[0] == 0 and orient[39] == 15 and sorted(set(orient)) == list(range(16))
    # each bin holds 2 or 3 of the 40 orientations, i.e. equal angular width up to rounding
    assert set(np.bincount(orient)) <= {2, 3}
    assert math.isclose(40 / 16, 2.5)
