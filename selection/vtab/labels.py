"""Label derivations of the structured VTAB tasks, as pure NumPy functions of TFDS features.

Definitions follow google-research/task_adaptation:
- Clevr count: number of objects minus 3 (3..10 objects -> classes 0..7).
- Clevr distance: depth (pixel_coords z) of the closest object, binned by
  thresholds 0, 8, 8.5, 9, 9.5, 10, 100 into 6 classes.
- KITTI distance: depth (location z) of the closest vehicle (Car, Van, Truck), binned by
  thresholds -100, 8, 20, 999 into 4 classes; an image without vehicles falls in the last.
- dSprites location: x position (32 values) into 16 bins; orientation (40 values) into 16 bins.
- sNORB azimuth (18 classes) and elevation (9), DMLab (6) and the natural/specialized tasks: as given.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "clevr_count",
    "clevr_distance",
    "kitti_distance",
    "dsprites_location",
    "dsprites_orientation",
    "bin_by_thresholds",
    "CLEVR_DISTANCE_THRESHOLDS",
    "KITTI_DISTANCE_THRESHOLDS",
    "KITTI_VEHICLE_TYPES",
]

CLEVR_DISTANCE_THRESHOLDS = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])
KITTI_DISTANCE_THRESHOLDS = np.array([-100.0, 8.0, 20.0, 999.0])
KITTI_VEHICLE_TYPES = (0, 1, 2)  # Car, Van, Truck in TFDS kitti's object type labels


def bin_by_thresholds(value: float, thresholds: np.ndarray, n_classes: int) -> int:
    """The largest i with thresholds[i] < value, as task_adaptation computes it, capped at n_classes - 1."""
    below = np.nonzero(thresholds < value)[0]
    if len(below) == 0:
        raise ValueError(f"{value} is not above the first threshold {thresholds[0]}")
    return int(min(below.max(), n_classes - 1))


def clevr_count(n_objects: int) -> int:
    if not 3 <= n_objects <= 10:
        raise ValueError(f"CLEVR images hold 3 to 10 objects, got {n_objects}")
    return n_objects - 3


def clevr_distance(pixel_coords: np.ndarray) -> int:
    """pixel_coords: (n_objects, 3) with depth in column 2."""
    return bin_by_thresholds(float(np.min(np.asarray(pixel_coords)[:, 2])), CLEVR_DISTANCE_THRESHOLDS, 6)


def kitti_distance(types: np.ndarray, locations: np.ndarray) -> int:
    """types: (n,) object type ids; locations: (n, 3) camera coordinates with depth in column 2."""
    types = np.asarray(types)
    locations = np.asarray(locations, dtype=float).reshape(-1, 3)
    vehicles = np.isin(types, KITTI_VEHICLE_TYPES)
    depth = float(locations[vehicles, 2].min()) if vehicles.any() else 1000.0  # no vehicle: task_adaptation's stand-in
    return bin_by_thresholds(depth, KITTI_DISTANCE_THRESHOLDS, 4)


def dsprites_location(label_x_position: int, num_classes: int = 16, num_values: int = 32) -> int:
    return int(label_x_position) * num_classes // num_values


def dsprites_orientation(label_orientation: int, num_classes: int = 16, num_values: int = 40) -> int:
    return int(label_orientation) * num_classes // num_values
