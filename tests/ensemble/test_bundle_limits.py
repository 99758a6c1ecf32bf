"""`.zooens` files built to hurt: a part that expands a thousandfold, forged parts whose checksums match,
and damaged files. Each is a `BundleError` (a `ConfigError`: the CLI's one-line `error:`), decided before
memory is spent on it, never a zipfile, safetensors or torch exception."""

from __future__ import annotations

import hashlib
import json
import random
import struct
import tracemalloc
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from tests.ensemble.test_bundle import bundle_file  # noqa: F401  the fixture: a two-member file no zoo can build
from zooens.ensemble import BundleError, BundleLimits, EnsemblePredictor, read_bundle
from zooens.errors import ConfigError

BIG_PART = "base/0.safetensors"


def forge(src: Path, dst: Path, edit: Callable[[dict[str, bytes]], dict[str, bytes]]) -> Path:
    """Copy a `.zooens` file with its parts changed by `edit` and the manifest's sizes and sha256 written
    to match, as a forger who can rewrite the manifest would: only what is inside the parts can be checked."""
    with zipfile.ZipFile(src) as zin:
        parts = {info.filename: zin.read(info) for info in zin.infolist()}
    manifest = json.loads(parts.pop("manifest.json"))
    parts = edit(parts)
    manifest["parts"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in parts.items()}
    with zipfile.ZipFile(dst, "w") as zout:
        zout.writestr("manifest.json", json.dumps(manifest))
        for name, data in parts.items():
            zout.writestr(name, data)
    return dst


def edit_config(member: int, change: Callable[[dict], None]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        name = f"members/{member}/config.json"
        config = json.loads(parts[name])
        change(config)
        parts[name] = json.dumps(config).encode()
        return parts

    return edit


def replace_part(name: str, data: bytes) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    return lambda parts: parts | {name: data}


def _zeros_bomb(src: Path, dst: Path, n_bytes: int, *, compress_type: int = zipfile.ZIP_DEFLATED) -> Path:
    """`src` with its part BIG_PART replaced by `n_bytes` zeros, deflated (a thousandfold smaller on disk),
    written in 1 MiB chunks so that the test never holds them; the manifest's size and sha256 match."""
    chunk = bytes(2**20)
    return _replace_big_part(src, dst, (chunk for _ in range(n_bytes // len(chunk))), compress_type)


def _replace_big_part(src: Path, dst: Path, chunks: Iterable[bytes], compress_type: int) -> Path:
    """`src` with BIG_PART's bytes streamed from `chunks` (never held whole) under `compress_type`, and the
    manifest's size and sha256 written to match, as a forger who can rewrite the manifest would."""
    digest = hashlib.sha256()
    size = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        manifest = json.loads(zin.read("manifest.json"))
        for info in zin.infolist():
            if info.filename not in ("manifest.json", BIG_PART):
                zout.writestr(info.filename, zin.read(info))
        info = zipfile.ZipInfo(BIG_PART)
        info.compress_type = compress_type
        with zout.open(info, "w") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        manifest["parts"][BIG_PART] = {"sha256": digest.hexdigest(), "size": size}
        zout.writestr("manifest.json", json.dumps(manifest))
    return dst


def _compressible_tensors(n_mib: int) -> Iterator[bytes]:
    """A valid safetensors file of one `n_mib` MiB uint8 tensor, in 1 MiB chunks of 16 KiB random bytes
    then zeros: it deflates about 60:1, under `BundleLimits.max_ratio`, so only its compression tells."""
    header = json.dumps({"pad": {"dtype": "U8", "shape": [n_mib * 2**20], "data_offsets": [0, n_mib * 2**20]}})
    header += " " * (-len(header) % 8)
    yield struct.pack("<Q", len(header)) + header.encode()
    rng = random.Random(0)
    for _ in range(n_mib):
        yield rng.randbytes(2**14) + bytes(2**20 - 2**14)


def _declare_size(path: Path, name: str, declared: int, *, stored: bool = False) -> None:
    """Write `declared` as the uncompressed size of entry `name` in the zip's central directory (and as its
    compressed size too with `stored`, so that a stored entry claims `declared` bytes in the file)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    while data[at + 46 : at + 46 + struct.unpack("<H", data[at + 28 : at + 30])[0]] != name.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    data[at + 24 : at + 28] = struct.pack("<I", declared)
    if stored:
        data[at + 20 : at + 24] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))


def _peak_allocated(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    except BundleError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_part_expanding_a_thousandfold_is_refused_from_the_directory_before_any_byte_is_read(
    bundle_file,  # noqa: F811
    tmp_path,
):
    bomb = _zeros_bomb(bundle_file, tmp_path / "bomb.zooens", 64 * 2**20)
    info = zipfile.ZipFile(bomb).getinfo(BIG_PART)
    assert info.file_size == 64 * 2**20 and info.compress_size < 2**20  # the checksums match: only the ratio tells
    with pytest.raises(BundleError, match=r"expansion above 100:1 \(BundleLimits.max_ratio\)") as caught:
        read_bundle(bomb)
    assert BIG_PART in str(caught.value) and isinstance(caught.value, ConfigError)
    assert _peak_allocated(lambda: read_bundle(bomb)) < 4 * 2**20  # nothing of the 64 MiB was decompressed
    with pytest.raises(BundleError, match="expansion above"):
        EnsemblePredictor.load(bomb)  # zooens.load and `zooens predict` read through read_bundle


def test_a_directory_declaring_gigabytes_for_a_small_file_is_refused_before_reading(bundle_file, tmp_path):  # noqa: F811
    """The issue's file: 3.2 MB on disk declaring a 3 GiB part. Here the directory's sizes are written by hand
    (3 GiB declared, a few kB stored), so no test spends the memory the reader must not."""
    bomb = _zeros_bomb(bundle_file, tmp_path / "declared.zooens", 4 * 2**20)
    declared = 3 * 2**30
    _declare_size(bomb, BIG_PART, declared)
    assert zipfile.ZipFile(bomb).getinfo(BIG_PART).file_size == declared
    with pytest.raises(BundleError, match="declares 3221225472 bytes compressed into"):
        read_bundle(bomb)


def test_the_ratio_bound_spares_small_parts_and_can_be_set(bundle_file, tmp_path):  # noqa: F811
    bundle = read_bundle(bundle_file)  # stored parts (ratio 1) and small deflated JSON pass
    assert len(bundle.members) == 2
    bomb = _zeros_bomb(bundle_file, tmp_path / "bomb.zooens", 8 * 2**20)
    with pytest.raises(BundleError, match="expansion above 500:1"):
        read_bundle(bomb, limits=BundleLimits(max_ratio=500, ratio_free_bytes=2**20))
    # allowed by the ratio, a deflated tensors part is still refused: zooens stores tensors uncompressed
    with pytest.raises(BundleError, match=f"part {BIG_PART} is a tensors part stored compressed"):
        read_bundle(bomb, limits=BundleLimits(ratio_free_bytes=16 * 2**20, chunk_bytes=2**16))
    # stored as zooens writes it, the part is read (hashed in chunks) and refused for what it holds, not its size
    stored = _zeros_bomb(bundle_file, tmp_path / "stored.zooens", 8 * 2**20, compress_type=zipfile.ZIP_STORED)
    with pytest.raises(BundleError, match=f"part {BIG_PART} is not a valid safetensors file"):
        read_bundle(stored, limits=BundleLimits(chunk_bytes=2**16))


def test_a_compressed_tensors_part_within_the_ratio_is_refused_from_the_directory(
    bundle_file,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """Failure 3's remaining hole: a valid safetensors part deflated about 60:1 (under max_ratio), its
    checksums matching, once read whole (a 30 MB file could claim 3 GiB). zooens never compresses a tensors
    part, so the zip directory alone refuses it: no entry is opened and nothing of it is allocated."""
    deflated = zipfile.ZIP_DEFLATED
    forged = _replace_big_part(bundle_file, tmp_path / "deflated.zooens", _compressible_tensors(32), deflated)
    info = zipfile.ZipFile(forged).getinfo(BIG_PART)
    assert info.file_size > 32 * 2**20 and 10 < info.file_size / info.compress_size < 100  # the ratio lets it by
    assert forged.stat().st_size < info.file_size // 8  # a small file declaring a large part
    opened: list[str] = []
    open_entry = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: str | zipfile.ZipInfo, *args: object, **kwargs: object):
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return open_entry(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(BundleError, match=f"part {BIG_PART} is a tensors part stored compressed \\(deflate\\)"):
        read_bundle(forged)
    assert opened == []  # refused from the directory: not even the manifest was read
    assert _peak_allocated(lambda: read_bundle(forged)) < 4 * 2**20
    with pytest.raises(BundleError, match="zooens stores tensors uncompressed and never writes such a part"):
        EnsemblePredictor.load(forged)  # zooens.load and `zooens predict` read through read_bundle


def test_a_stored_part_claiming_more_bytes_than_the_file_holds_never_allocates_them(bundle_file, tmp_path):  # noqa: F811
    """A stored part whose directory (and manifest) claim 256 MiB in a file of a few: the reader takes
    bytes as they arrive, so the file runs out before memory does, and the part is refused as damaged."""
    declared = 256 * 2**20
    forged = forge(bundle_file, tmp_path / "short.zooens", lambda parts: parts)
    with zipfile.ZipFile(forged) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        parts = {info.filename: zf.read(info) for info in zf.infolist() if info.filename != "manifest.json"}
    manifest["parts"][BIG_PART]["size"] = declared
    with zipfile.ZipFile(forged, "w") as zout:
        zout.writestr("manifest.json", json.dumps(manifest))
        for name, data in parts.items():
            zout.writestr(name, data)
    _declare_size(forged, BIG_PART, declared, stored=True)
    assert forged.stat().st_size < declared // 16
    with pytest.raises(BundleError, match=f"part {BIG_PART} cannot be read \\(EOFError"):
        read_bundle(forged)
    assert _peak_allocated(lambda: read_bundle(forged)) < declared // 8


@pytest.mark.parametrize(
    "edit, message",
    [
        (replace_part("members/0/model.safetensors", b"\xff" * 8 + b"not a header"), "not a valid safetensors file"),
        (replace_part("members/0/model.safetensors", struct.pack("<Q", 16) + b'{"a": [1, 2, 3]}'), "safetensors"),
        (replace_part(BIG_PART, b"\x00" * 4), "not a valid safetensors file"),
        (edit_config(0, lambda c: c.update(resolution=100000)), "resolution 100000 is not between 16 and 1024"),
        (
            edit_config(0, lambda c: c["data_config"].update(input_size=[3, 100000, 100000])),
            "input size [3, 100000, 100000]",
        ),
        (edit_config(1, lambda c: c["data_config"].update(crop_pct=1e-9)), "crop_pct 1e-09"),
        (edit_config(0, lambda c: c["data_config"].update(mean=[0.5])), "its mean [0.5] is not 3 finite numbers"),
        (edit_config(0, lambda c: c["data_config"].update(std=[0.2, 0.2, 0])), "std"),
        (edit_config(0, lambda c: c["data_config"].update(interpolation="magic")), "interpolation 'magic'"),
        (edit_config(0, lambda c: c.update(strategy="bogus")), "Unknown strategy 'bogus'"),
        (edit_config(0, lambda c: c.update(model=None)), "model name is None"),
        (edit_config(0, lambda c: c.pop("data_config")), "no data config"),
    ],
    ids=[
        "header-length",
        "header-not-tensors",
        "base-truncated",
        "resolution",
        "input-size",
        "crop-pct",
        "mean",
        "std",
        "interpolation",
        "strategy",
        "model",
        "no-data-config",
    ],
)
def test_forged_parts_with_matching_checksums_are_bundle_errors(bundle_file, tmp_path, edit, message):  # noqa: F811
    forged = forge(bundle_file, tmp_path / "forged.zooens", edit)
    with pytest.raises(BundleError) as caught:
        EnsemblePredictor.load(forged)
    assert message in str(caught.value), caught.value
    assert "members/" in str(caught.value) or "base/" in str(caught.value)  # it names the part


def test_a_head_for_another_class_count_is_refused(bundle_file, tmp_path):  # noqa: F811
    from safetensors.torch import load, save

    def edit(parts: dict[str, bytes]) -> dict[str, bytes]:
        tensors = load(parts["members/0/model.safetensors"])
        tensors["head.weight"] = tensors["head.weight"][:2].contiguous()
        return parts | {"members/0/model.safetensors": save(tensors)}

    with pytest.raises(BundleError, match=r"head.weight has shape \(2, \d+\), not \(3, features\)"):
        read_bundle(forge(bundle_file, tmp_path / "head.zooens", edit))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupted(data: bytes) -> bytes:
    """Zeros over the middle of the largest part: the zip directory still reads, the part's CRC fails."""
    middle = len(data) // 2
    return data[:middle] + bytes(64) + data[middle + 64 :]


def _bad_local_header(data: bytes) -> bytes:
    """The second entry's local header signature overwritten."""
    second = data.index(b"PK\x03\x04", 4)
    return data[:second] + b"XXXX" + data[second + 4 :]


@pytest.mark.parametrize(
    "damage, message",
    [
        (_truncated, "is not a zooens ensemble file"),
        (_corrupted, "cannot be read (BadZipFile: Bad CRC-32"),
        (_bad_local_header, "cannot be read (BadZipFile"),
        (lambda data: b"", "is not a zooens ensemble file"),
        (lambda data: b"PK\x05\x06" + bytes(18), "has no single manifest.json"),
    ],
    ids=["truncated", "corrupted", "bad-local-header", "empty", "empty-zip"],
)
def test_a_damaged_file_is_a_bundle_error_not_a_zipfile_error(bundle_file, tmp_path, damage, message):  # noqa: F811
    damaged = tmp_path / "damaged.zooens"
    damaged.write_bytes(damage(bundle_file.read_bytes()))
    with pytest.raises(BundleError) as caught:
        EnsemblePredictor.load(damaged)
    assert message in str(caught.value), caught.value
    assert "damaged.zooens" in str(caught.value)


def test_a_missing_part_is_a_bundle_error(bundle_file, tmp_path):  # noqa: F811
    missing = tmp_path / "missing.zooens"
    with zipfile.ZipFile(bundle_file) as zin, zipfile.ZipFile(missing, "w") as zout:
        for info in zin.infolist():
            if info.filename != "members/1/config.json":
                zout.writestr(info, zin.read(info))
    with pytest.raises(BundleError, match="part members/1/config.json is missing"):
        read_bundle(missing)
