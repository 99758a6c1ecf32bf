"""The 19 VTAB-1k tasks in one table, following google-research/task_adaptation.

Each task takes its 1k training data from the first 800 examples of its train split
(`train800`) and the first 200 of its validation split (`val200`), and is evaluated on the
whole test split. Split expressions are TFDS slicing strings, with the reference's absolute
bounds (`train[:589824]` is dSprites' 80 %); `VtabTask.scaled` rescales them to other split
sizes (the tests' mock data) and is never used for real data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from zooens.errors import ConfigError
from zooens.registry import Registry

__all__ = [
    "VtabTask",
    "TASKS",
    "SPLIT_SIZES",
    "FLIP_SAFE",
    "CROP_UNSAFE",
    "TASK_REGISTRY",
    "GROUPS",
    "resolve_tasks",
    "get_task",
]

GROUPS = ("natural", "specialized", "structured")


@dataclass(frozen=True)
class VtabTask:
    name: str
    group: str
    tfds_name: str  # builder[/config]:version
    num_classes: int
    train_split: str
    val_split: str
    test_split: str
    label: str  # a function of selection.vtab.labels, or a feature name used as given
    label_feature: str = "label"
    stand_in: bool = False  # offline stand-ins are never reported as VTAB
    flip_preserves_label: bool = False  # a left-right mirror keeps every label (see FLIP_SAFETY)
    crop_preserves_label: bool = True  # a small random crop keeps every label
    train_size: int = 800  # VTAB-1k: the first 800 examples of train_split ...
    val_size: int = 200  # ... and the first 200 of val_split

    @property
    def declarations(self) -> dict[str, bool]:
        """What the task declares about its labels, as a dataset's `extra` holds it."""
        return {"flip_preserves_label": self.flip_preserves_label, "crop_preserves_label": self.crop_preserves_label}

    @property
    def builder(self) -> str:
        """The TFDS builder name (with its config), without the version."""
        return self.tfds_name.split(":", 1)[0]

    @property
    def version(self) -> str:
        """The TFDS version pin (`3.*.*`, `3.1.0`)."""
        return self.tfds_name.split(":", 1)[1]

    @property
    def train800(self) -> str:
        return _first(self.train_split, self.train_size)

    @property
    def val200(self) -> str:
        return _first(self.val_split, self.val_size)

    def scaled(self, split_sizes: Mapping[str, int], *, train: int = 8, val: int = 4) -> VtabTask:
        """This task on splits of `split_sizes` examples (TFDS split name -> size) instead of the real ones.

        For tests on TFDS mock data only: each absolute slice bound is moved in proportion to its
        split's real size (`SPLIT_SIZES`), so dSprites' `train[:589824]`/`train[589824:663552]`/
        `train[663552:]` (80 %/10 %/10 % of 737,280) become `train[:32]`/`train[32:36]`/`train[36:]`
        on 40 mock examples, and the 1k subsets take the first `train` and `val` examples.
        """
        real = SPLIT_SIZES.get(self.builder.split("/")[0], {})

        def scale(expr: str) -> str:
            m = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", expr)
            if m is None:
                raise ConfigError(f"Cannot scale the split {expr!r} of task {self.name}.")
            split, start, stop = m.groups()
            if not (start or stop):
                return expr
            if split not in real or split not in split_sizes:
                raise ConfigError(f"Task {self.name}: give the size of split {split!r} to scale {expr!r}.")
            bound = [str(round(int(b) * split_sizes[split] / real[split])) if b else "" for b in (start, stop)]
            return f"{split}[{bound[0]}:{bound[1]}]"

        return dataclasses.replace(
            self,
            train_split=scale(self.train_split),
            val_split=scale(self.val_split),
            test_split=scale(self.test_split),
            train_size=train,
            val_size=val,
        )


def _first(split: str, n: int) -> str:
    """The first n examples of a TFDS split expression: `train` -> `train[:n]`, `train[10:]` -> `train[10:10+n]`."""
    if "[" not in split:
        return f"{split}[:{n}]"
    base, rng = split[:-1].split("[", 1)
    start = int(rng.split(":")[0] or 0)
    return f"{base}[{start}:{start + n}]"


SPLIT_SIZES: dict[str, dict[str, int]] = {
    "caltech101": {"train": 3060},
    "cifar100": {"train": 50000},
    "oxford_iiit_pet": {"train": 3680},
    "svhn_cropped": {"train": 73257},
    "eurosat": {"train": 27000},
    "resisc45": {"train": 31500},
    "clevr": {"train": 70000},
    "dsprites": {"train": 737280},
    "smallnorb": {"test": 24300},
}
"""The real sizes of the TFDS splits that the table slices with absolute bounds (the reference's
percentages of these: caltech101 90 %, cifar100 90 %, pets 80 %, svhn 90 %, eurosat and resisc45
60/20/20 %, clevr 90 %, dsprites 80/10/10 %, smallnorb's test 50/50 %); `VtabTask.scaled` uses them."""

_T = VtabTask
TASKS: tuple[VtabTask, ...] = (
    # natural
    _T("caltech101", "natural", "caltech101:3.*.*", 102, "train[:2754]", "train[2754:]", "test", "given"),
    _T("cifar100", "natural", "cifar100:3.*.*", 100, "train[:45000]", "train[45000:]", "test", "given"),
    _T("dtd", "natural", "dtd:3.*.*", 47, "train", "validation", "test", "given"),
    _T("oxford_flowers102", "natural", "oxford_flowers102:2.*.*", 102, "train", "validation", "test", "given"),
    _T("oxford_iiit_pet", "natural", "oxford_iiit_pet:3.*.*", 37, "train[:2944]", "train[2944:]", "test", "given"),
    _T("sun397", "natural", "sun397/tfds:4.*.*", 397, "train", "validation", "test", "given"),
    _T("svhn", "natural", "svhn_cropped:3.*.*", 10, "train[:65931]", "train[65931:]", "test", "given"),
    # specialized
    _T("patch_camelyon", "specialized", "patch_camelyon:2.*.*", 2, "train", "validation", "test", "given"),
    _T(
        "eurosat",
        "specialized",
        "eurosat/rgb:2.*.*",
        10,
        "train[:16200]",
        "train[16200:21600]",
        "train[21600:]",
        "given",
    ),
    _T(
        "resisc45", "specialized", "resisc45:3.*.*", 45, "train[:18900]", "train[18900:25200]", "train[25200:]", "given"
    ),
    _T(
        "diabetic_retinopathy",
        "specialized",
        "diabetic_retinopathy_detection/btgraham-300:3.*.*",
        5,
        "train",
        "validation",
        "test",
        "given",
    ),
    # structured
    _T("clevr_count", "structured", "clevr:3.*.*", 8, "train[:63000]", "train[63000:]", "validation", "clevr_count"),
    _T(
        "clevr_distance",
        "structured",
        "clevr:3.*.*",
        6,
        "train[:63000]",
        "train[63000:]",
        "validation",
        "clevr_distance",
    ),
    _T("dmlab", "structured", "dmlab:2.0.1", 6, "train", "validation", "test", "given"),
    _T("kitti_distance", "structured", "kitti:3.1.0", 4, "train", "validation", "test", "kitti_distance"),
    _T(
        "dsprites_location",
        "structured",
        "dsprites:2.*.*",
        16,
        "train[:589824]",
        "train[589824:663552]",
        "train[663552:]",
        "dsprites_location",
        label_feature="label_x_position",
    ),
    _T(
        "dsprites_orientation",
        "structured",
        "dsprites:2.*.*",
        16,
        "train[:589824]",
        "train[589824:663552]",
        "train[663552:]",
        "dsprites_orientation",
        label_feature="label_orientation",
    ),
    _T(
        "smallnorb_azimuth",
        "structured",
        "smallnorb:2.*.*",
        18,
        "train",
        "test[:12150]",
        "test[12150:]",
        "given",
        label_feature="label_azimuth",
    ),
    _T(
        "smallnorb_elevation",
        "structured",
        "smallnorb:2.*.*",
        9,
        "train",
        "test[:12150]",
        "test[12150:]",
        "given",
        label_feature="label_elevation",
    ),
)

FLIP_SAFE = frozenset(
    {
        # natural: object and scene categories are mirror-symmetric classes
        "caltech101",
        "cifar100",
        "dtd",
        "oxford_flowers102",
        "oxford_iiit_pet",
        "sun397",
        # specialized: tissue patches, satellite and aerial scenes have no handedness; retinopathy is graded
        # the same for left and right eyes (a mirror turns one into the other)
        "patch_camelyon",
        "eurosat",
        "resisc45",
        "diabetic_retinopathy",
        # structured: a count, a depth, the nearest car's distance and an elevation survive a mirror
        "clevr_count",
        "clevr_distance",
        "kitti_distance",
        "smallnorb_elevation",
    }
)
"""Tasks whose labels survive a left-right mirror. Not: svhn (digits: a mirrored 2 or 7 is no digit),
dsprites_location (the label is the x position), dsprites_orientation (a mirror maps angle a to -a),
smallnorb_azimuth (a mirror maps azimuth a to -a), dmlab (its 6 classes mix reward and distance of
objects whose left/right placement we could not rule out of the labels: off until shown safe)."""

CROP_UNSAFE = frozenset({"dsprites_location", "clevr_count", "clevr_distance", "kitti_distance"})
"""Tasks whose labels a small random crop can change: a position in 16 bins (a crop shifts content by
more than a bin), a count or a nearest object that the crop may cut off."""

TASKS = tuple(
    dataclasses.replace(t, flip_preserves_label=t.name in FLIP_SAFE, crop_preserves_label=t.name not in CROP_UNSAFE)
    for t in TASKS
)

TASK_REGISTRY: Registry[VtabTask] = Registry("VTAB task", error=ConfigError)
for _task in TASKS:
    TASK_REGISTRY.register(_task.name, _task)


def get_task(name: str) -> VtabTask:
    """The task called `name`; ConfigError naming the closest tasks if there is none."""
    return TASK_REGISTRY.get(name)


def resolve_tasks(spec: str) -> list[VtabTask]:
    """'all', a group name, or comma-separated task names."""
    spec = spec.strip()
    if spec == "all":
        return list(TASKS)
    if spec in GROUPS:
        return [t for t in TASKS if t.group == spec]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError("Give tasks as 'all', natural, specialized, structured, or comma-separated names.")
    return [get_task(n) for n in names]
