"""`zooens export` and `zooens predict`: a readable table, valid JSON, the registry's ensemble and the
file's give the same answer, and a tampered file is refused with one clear line."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
from typer.testing import CliRunner

import zooens
from tests.ensemble.test_bundle import bundle_file  # noqa: F401  a two-member file no zoo can build
from tests.service._tiny import fit_tiny, register_tiny_zoo
from zooens.selection.datasets import load_dataset
from zooens.service.cli import app


@pytest.mark.slow
def test_export_then_predict_from_the_file_and_from_the_registry(zooens_home, tmp_path):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    fitted = fit_tiny()
    ds = load_dataset("digits")
    images = []
    for i in range(3):
        images.append(str(tmp_path / f"digit-{i}.png"))
        ds.split("test").image(i).save(images[-1])
    runner = CliRunner()
    model = tmp_path / "digits.zooens"
    result = runner.invoke(app, ["export", str(fitted.job_id), "-o", str(model)])
    assert result.exit_code == 0, result.output
    assert model.is_file() and "written to" in result.output

    table = runner.invoke(app, ["predict", str(model), *images, "--top", "2"], env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "image" in table.output and "next 1" in table.output and "digit-0.png" in table.output

    from_file = json.loads(runner.invoke(app, ["predict", str(model), *images, "--json"]).output)
    from_registry = json.loads(
        runner.invoke(app, ["predict", "--ensemble", str(fitted.ensemble_id), *images, "--json", "--top", "1"]).output
    )
    assert from_file["classes"] == ds.classes and len(from_file["predictions"]) == 3
    for a, b in zip(from_file["predictions"], from_registry["predictions"], strict=False):
        assert a["label"] == b["label"] and len(a["top"]) == 3 and len(b["top"]) == 1
        assert all(abs(a["probabilities"][c] - b["probabilities"][c]) < 1e-5 for c in ds.classes)

    tampered = tmp_path / "tampered.zooens"
    with zipfile.ZipFile(model) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "members/0/model.safetensors":
                data = data[:-4] + b"\x00\x00\x80\x3f"
            zout.writestr(info.filename, data)
    refused = runner.invoke(app, ["predict", str(tampered), images[0]])
    assert refused.exit_code == 2 and "does not match its sha256" in refused.output

    # images decoded right: a 16-bit PNG and an EXIF-rotated JPEG get the answer of their plain versions
    import numpy as np
    from PIL import Image

    grey = np.asarray(ds.split("test").image(0).convert("L").resize((64, 64), Image.NEAREST))
    Image.fromarray(grey).save(tmp_path / "plain.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit: x * 257, decoded x >> 8
    Image.fromarray(grey).save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels are turned; a viewer rotates them 90 degrees clockwise
    Image.fromarray(np.rot90(grey, 1)).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    Image.fromarray(np.rot90(grey, 1)).save(tmp_path / "sideways.png")  # what ignoring EXIF would show
    names = ["plain.png", "deep.png", "upright.jpg", "rotated.jpg", "sideways.png"]
    out = json.loads(runner.invoke(app, ["predict", str(model), *[str(tmp_path / n) for n in names], "--json"]).output)
    proba = {
        n: np.array([p["probabilities"][c] for c in ds.classes])
        for n, p in zip(names, out["predictions"], strict=False)
    }
    np.testing.assert_allclose(proba["deep.png"], proba["plain.png"], atol=1e-6)
    assert (
        np.abs(proba["rotated.jpg"] - proba["upright.jpg"]).max()
        < 0.5 * np.abs(proba["sideways.png"] - proba["plain.png"]).max()
    )

    assert runner.invoke(app, ["export", "-o", str(model)]).exit_code == 2
    missing = runner.invoke(app, ["predict", str(model)])
    assert missing.exit_code == 2 and "at least one image" in missing.output


@pytest.mark.parametrize("forgery", ["resolution", "safetensors-header", "damaged", "expansion"])
def test_a_forged_or_damaged_file_is_one_error_line_and_exit_2(bundle_file, tmp_path, zooens_home, forgery):  # noqa: F811
    """Failure 4 of issue 26 and the damaged file of issue 25: `zooens predict` and `zooens.load` answer a
    forged file whose checksums match, a damaged one and a thousandfold part with a BundleError, not a traceback."""
    from PIL import Image

    from tests.ensemble.test_bundle_limits import BIG_PART, _zeros_bomb, edit_config, forge, replace_part
    from zooens.ensemble import BundleError

    bad = tmp_path / "bad.zooens"
    if forgery == "resolution":
        forge(bundle_file, bad, edit_config(0, lambda c: c.update(resolution=100000)))
        expected = "resolution 100000 is not between 16 and 1024 pixels"
    elif forgery == "safetensors-header":
        forge(bundle_file, bad, replace_part("members/1/model.safetensors", b"\xff" * 8 + b"{}"))
        expected = "part members/1/model.safetensors is not a valid safetensors file"
    elif forgery == "damaged":
        data = bundle_file.read_bytes()
        bad.write_bytes(data[: len(data) // 2] + bytes(64) + data[len(data) // 2 + 64 :])
        expected = "cannot be read (BadZipFile"
    else:
        _zeros_bomb(bundle_file, bad, 16 * 2**20)
        expected = f"part {BIG_PART} declares 16777216 bytes compressed into"
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (120, 30, 200)).save(image)

    result = CliRunner().invoke(app, ["predict", str(bad), str(image)])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message and "Traceback" not in result.output, result.output
    assert expected in message and "bad.zooens" in message
    with pytest.raises(BundleError, match=re.escape(expected)):
        zooens.load(str(bad))
