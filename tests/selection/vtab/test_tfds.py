"""The TFDS path for real: each of the 19 tasks exported by `export_task` from TFDS mock data.

TFDS's `mock_data` generates random examples from each builder's own feature spec (its
`RandomFakeGenerator`); we keep that generator and TFDS's split arithmetic
(`ReadInstruction.to_absolute`) and add two things the stock mock lacks:
- slices are honoured: example `i` of a split is always the generator's example `i`, so
  `train[32:36]` yields examples 32..35 of a 40-example `train` (the stock mock yields
  `num_examples` for any split), and the tasks' split expressions are scaled to these sizes
  with `VtabTask.scaled`;
- the few values the generator draws out of their real range are brought in: dSprites pixels
  0/1 (as TFDS stores them), one length for all object features of an image, CLEVR scenes of
  3 to 10 objects with depths around 7-12, KITTI depths of 0-40 m, so that the label rules see
  data shaped like the real data.
Expected labels are recomputed here from those examples, by the pure functions of
`selection.vtab.labels`, independently of the exporter.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from zooens.errors import ConfigError, DatasetError
from zooens.selection.datasets import load_exported_task
from zooens.selection.vtab import labels as L
from zooens.selection.vtab.sources import EXPORT_SIZE, _tfds, export_task, load_tfds_task
from zooens.selection.vtab.tasks import TASKS, VtabTask

if importlib.util.find_spec("tensorflow_datasets") is None:
    pytest.skip("the TFDS path needs `pip install 'zooens[vtab]'`", allow_module_level=True)
tfds = _tfds()  # imports TensorFlow quietly and after triton (see `_tfds`)
import tensorflow as tf  # noqa: E402
from tensorflow_datasets.testing.mocking import RandomFakeGenerator  # noqa: E402

MOCK_SIZES = {"train": 40, "validation": 16, "test": 24}
N_TRAIN, N_VAL = 8, 4
PETS_VERSION = "4.0.0"  # the only oxford_iiit_pet tensorflow-datasets 4.9 builds (see test_pets_3x_is_refused)
NATIVE = {
    "cifar100": 32,
    "svhn": 32,
    "eurosat": 64,
    "patch_camelyon": 96,
    "dsprites_location": 64,
    "dsprites_orientation": 64,
    "smallnorb_azimuth": 96,
    "smallnorb_elevation": 96,
}
GREY = {"dsprites_location", "dsprites_orientation", "smallnorb_azimuth", "smallnorb_elevation"}


def _realistic(name: str, ex: dict, index: int) -> dict:
    """Bring the generator's out-of-range values into the real data's ranges (see the module docstring)."""
    if name == "dsprites":
        ex["image"] = (ex["image"] > 127).astype(np.uint8)
    elif name == "clevr":
        n = 3 + index % 8  # every count class 0..7 occurs
        ex["objects"] = {k: v[:n] if len(v) >= n else np.resize(v, (n, *v.shape[1:])) for k, v in ex["objects"].items()}
        coords = ex["objects"]["pixel_coords"].astype(np.float32)
        coords[:, 2] = 7.0 + 5.0 * coords[:, 2]
        ex["objects"]["pixel_coords"] = coords
    elif name == "kitti":  # one length for all of an image's object features, as in real data
        n = min(len(v) for v in ex["objects"].values())
        ex["objects"] = {k: v[:n] for k, v in ex["objects"].items()}
        loc = ex["objects"]["location"].astype(np.float32)
        loc[:, 2] = 40.0 * loc[:, 2]
        ex["objects"]["location"] = loc
    return ex


def mock_example(builder, index: int) -> dict:
    """Example `index` of any split of `builder` (the same for every split, as TFDS's own mock)."""
    return _realistic(builder.name, RandomFakeGenerator(builder.info.features, num_examples=1)[index], index)


def _slice_indices(expr: str) -> list[int]:
    """The example indices of a split expression over `MOCK_SIZES`, by TFDS's own slicing rules."""
    infos = {k: tfds.core.SplitInfo(name=k, shard_lengths=[v], num_bytes=0) for k, v in MOCK_SIZES.items()}
    return [
        i
        for a in tfds.core.ReadInstruction.from_spec(expr).to_absolute(infos)
        for i in range(a.from_ or 0, MOCK_SIZES[a.splitname] if a.to is None else a.to)
    ]


def _mock_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    """`FileReaderBuilder._as_dataset` over mock examples, honouring the split's slice."""
    indices = _slice_indices(str(split))
    info = self.info.features.get_tensor_info()
    ds = tf.data.Dataset.from_generator(
        lambda: (mock_example(self, i) for i in indices),
        output_types=tf.nest.map_structure(lambda t: t.dtype, info),
        output_shapes=tf.nest.map_structure(lambda t: t.shape, info),
    )
    return ds.apply(tf.data.experimental.assert_cardinality(len(indices)))


def mock_tfds():
    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_mock_as_dataset)


def scaled(task: VtabTask, train: int = N_TRAIN, val: int = N_VAL) -> VtabTask:
    return task.scaled(MOCK_SIZES, train=train, val=val)


def export_all(out: Path, tasks=TASKS, *, train: int = N_TRAIN, val: int = N_VAL) -> dict[str, Path]:
    """Every task exported under mock data, `train` and `val` examples for the 1k splits (Pets at the
    version TFDS builds)."""
    with mock_tfds():
        return {
            t.name: export_task(
                scaled(t, train, val), out, version=PETS_VERSION if t.name == "oxford_iiit_pet" else None
            )
            for t in tasks
        }


def expected_label(task: VtabTask, ex: dict) -> int:
    """The reference's label of one example, straight from the label rules."""
    if task.label == "clevr_count":
        return L.clevr_count(len(ex["objects"]["size"]))
    if task.label == "clevr_distance":
        return L.clevr_distance(ex["objects"]["pixel_coords"])
    if task.label == "kitti_distance":
        return L.kitti_distance(ex["objects"]["type"], ex["objects"]["location"])
    if task.label == "dsprites_location":
        return L.dsprites_location(ex["label_x_position"])
    if task.label == "dsprites_orientation":
        return L.dsprites_orientation(ex["label_orientation"])
    return int(ex[task.label_feature])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vtab-tfds")
    export_all(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_export_under_mock_data(exported, task):
    small = scaled(task)
    meta = json.loads((exported / task.name / "task.json").read_text())
    assert meta["task"] == task.name and meta["group"] == task.group and meta["stand_in"] is False
    assert len(meta["classes"]) == task.num_classes
    with mock_tfds():
        builder = tfds.builder(f"{task.builder}:{PETS_VERSION if task.name == 'oxford_iiit_pet' else task.version}")
    names = getattr(builder.info.features[task.label_feature], "names", None) if task.label == "given" else None
    assert meta["classes"] == (list(names) if names else [str(i) for i in range(task.num_classes)])
    side = NATIVE.get(task.name, EXPORT_SIZE)
    ds = load_exported_task(exported, task.name)
    assert ds.classes == meta["classes"]
    for _folder, split, expr in (
        ("train800", "train", small.train800),
        ("val200", "val", small.val200),
        ("test", "test", small.test_split),
    ):
        sp = ds.split(split)
        indices = _slice_indices(expr)
        assert len(sp) == len(indices) > 0
        assert isinstance(sp.images, np.memmap) and sp.images.dtype == np.uint8
        assert sp.images.shape[1:] == ((side, side) if task.name in GREY else (side, side, 3))
        assert sp.images.max() >= 250 and sp.images.min() <= 5  # the 0-255 range (the generator draws 0..254)
        if task.builder == "dsprites":
            assert set(np.unique(sp.images)) == {0, 255}
        assert sp.labels.dtype == np.int64 and 0 <= sp.labels.min() and sp.labels.max() < task.num_classes
        want = [expected_label(task, mock_example(builder, i)) for i in indices]
        assert sp.labels.tolist() == want
        if task.name in NATIVE:  # native resolution: pixels as TFDS gives them (dSprites x 255)
            raw = mock_example(builder, indices[0])["image"]
            raw = raw[..., 0] if raw.shape[-1] == 1 else raw
            assert np.array_equal(sp.images[0], raw * 255 if task.builder == "dsprites" else raw)


@pytest.mark.slow
def test_labels_cover_the_derived_classes(exported):
    """The mock examples exercise more than one class of each derived label, so a wrong rule shows."""
    for name in ("clevr_count", "clevr_distance", "kitti_distance", "dsprites_location", "dsprites_orientation"):
        ds = load_exported_task(exported, name)
        labels = np.concatenate([ds.split(s).labels for s in ("train", "val", "test")])
        assert len(np.unique(labels)) >= 3, (name, labels)
    assert sorted(set(load_exported_task(exported, "clevr_count").split("train").labels)) == list(range(8))


def test_scaled_splits_keep_the_references_proportions():
    dsprites = next(t for t in TASKS if t.name == "dsprites_location").scaled({"train": 40})
    assert (dsprites.train800, dsprites.val200, dsprites.test_split) == ("train[0:8]", "train[32:36]", "train[36:]")
    eurosat = next(t for t in TASKS if t.name == "eurosat").scaled({"train": 40}, train=5, val=3)
    assert (eurosat.train800, eurosat.val200, eurosat.test_split) == ("train[0:5]", "train[24:27]", "train[32:]")
    norb = next(t for t in TASKS if t.name == "smallnorb_azimuth").scaled({"test": 24})
    assert (norb.train800, norb.val200, norb.test_split) == ("train[:8]", "test[0:4]", "test[12:]")
    with pytest.raises(ConfigError, match="size of split 'train'"):
        next(t for t in TASKS if t.name == "cifar100").scaled({"test": 10})
    # the real table is untouched
    assert next(t for t in TASKS if t.name == "dsprites_location").val200 == "train[589824:590024]"


def test_reexport_replaces_and_a_failed_export_leaves_nothing(tmp_path):
    task = scaled(next(t for t in TASKS if t.name == "svhn"))
    with mock_tfds():
        base = export_task(task, tmp_path)
        (base / "stale.txt").write_text("old")
        export_task(task, tmp_path)
        assert not (base / "stale.txt").exists()
        broken = task.__class__(**{**task.__dict__, "name": "svhn_broken", "num_classes": 3})  # labels up to 9
        with pytest.raises(
            DatasetError, match=r"svhn_broken: example \d+ of 'train\[0:8\]' has label \d, outside 0..2"
        ):
            export_task(broken, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["svhn"]


def test_pets_3x_is_refused_with_what_to_do(tmp_path):
    pets = next(t for t in TASKS if t.name == "oxford_iiit_pet")
    with mock_tfds(), pytest.raises(ConfigError) as err:
        export_task(pets, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "oxford_iiit_pet:3.*.*" in msg and "4.0.0" in msg and "tfds build" in msg
    assert not any(tmp_path.iterdir())


def test_kitti_is_pinned_as_the_reference():
    assert next(t for t in TASKS if t.name == "kitti_distance").tfds_name == "kitti:3.1.0"


def test_unprepared_data_is_a_one_line_error_with_the_build_command(tmp_path):
    task = next(t for t in TASKS if t.name == "dtd")
    with pytest.raises(DatasetError) as err:
        export_task(task, tmp_path / "out", str(tmp_path / "tfds"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("Task dtd: cannot read dtd:3.")
    assert re.search(rf"`tfds build dtd:3\.\d+\.\d+ --data_dir {re.escape(str(tmp_path / 'tfds'))}`", msg)
    assert not (tmp_path / "out" / "dtd").exists()


def test_a_pin_tfds_cannot_build_is_read_from_data_prepared_on_disk(tmp_path):
    """Pets 3.x prepared by another tensorflow-datasets (here written for real by TFDS's ad-hoc
    builder, no mock) is found in the data dir and exported, resized to 224 px."""
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(),
            "label": tfds.features.ClassLabel(names=[f"breed_{i}" for i in range(37)]),
            "file_name": tfds.features.Text(),
        }
    )

    def split(n: int):
        rng = np.random.default_rng(n)
        return tf.data.Dataset.from_generator(
            lambda: (
                {
                    "image": rng.integers(0, 256, (30 + i, 20, 3)).astype(np.uint8),
                    "label": i % 37,
                    "file_name": f"f{i}.jpg",
                }
                for i in range(n)
            ),
            output_signature={
                "image": tf.TensorSpec((None, None, 3), tf.uint8),
                "label": tf.TensorSpec((), tf.int64),
                "file_name": tf.TensorSpec((), tf.string),
            },
        )

    tfds.dataset_builders.store_as_tfds_dataset(
        name="oxford_iiit_pet",
        version="3.2.0",
        features=features,
        split_datasets={"train": split(12), "test": split(5)},
        data_dir=str(tmp_path / "tfds"),
    )
    pets = next(t for t in TASKS if t.name == "oxford_iiit_pet").scaled({"train": 12}, train=4, val=2)
    base = export_task(pets, tmp_path / "out", str(tmp_path / "tfds"))
    meta = json.loads((base / "task.json").read_text())
    assert meta["source"] == "oxford_iiit_pet:3.2.0" and meta["pinned"] == "oxford_iiit_pet:3.*.*"
    assert meta["classes"] == [f"breed_{i}" for i in range(37)]
    ds = load_exported_task(tmp_path / "out", "oxford_iiit_pet")
    assert (pets.train800, pets.val200) == ("train[0:4]", "train[10:12]")
    prepared = tfds.builder_from_directory(str(tmp_path / "tfds" / "oxford_iiit_pet" / "3.2.0"))
    for split, expr in (("train", "train[0:4]"), ("val", "train[10:12]"), ("test", "test")):
        want = [int(ex["label"]) for ex in tfds.as_numpy(prepared.as_dataset(split=expr, shuffle_files=False))]
        assert ds.split(split).labels.tolist() == want
    assert not set(ds.split("train").labels) & set(ds.split("val").labels)  # i % 37 = i: distinct examples
    assert ds.split("test").images.shape == (5, EXPORT_SIZE, EXPORT_SIZE, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dsprites_location", "dtd"])
def test_load_tfds_task_gives_what_export_writes(exported, name):
    task = scaled(next(t for t in TASKS if t.name == name))
    with mock_tfds():
        direct = load_tfds_task(task)
    assert direct.fingerprint == load_exported_task(exported, name).fingerprint
