"""VTAB-1k: the task table, label derivations, data sources and an offline stand-in suite."""

from zooens.selection.vtab.labels import (
    clevr_count,
    clevr_distance,
    dsprites_location,
    dsprites_orientation,
    kitti_distance,
)
from zooens.selection.vtab.offline import OFFLINE_TASKS, make_offline_suite
from zooens.selection.vtab.sources import export_task, load_exported_task, load_tfds_task
from zooens.selection.vtab.tasks import GROUPS, TASKS, VtabTask, get_task, resolve_tasks

__all__ = [
    "GROUPS",
    "TASKS",
    "VtabTask",
    "get_task",
    "resolve_tasks",
    "OFFLINE_TASKS",
    "make_offline_suite",
    "export_task",
    "load_exported_task",
    "load_tfds_task",
    "clevr_count",
    "clevr_distance",
    "kitti_distance",
    "dsprites_location",
    "dsprites_orientation",
]
