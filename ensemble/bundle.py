"""One-file ensembles (`.zooens`): every member's saved run, the base weights, preprocessing and
class names in one zip of JSON and safetensors, checksummed part by part.

Layout (format version 1)::

    manifest.json                   what the file holds, versions, the ensemble's temperature, and the
                                    sha256 and size of every part
    members/<i>/config.json         member i's artifact config (model, strategy, classes, data_config, ...)
    members/<i>/model.safetensors   member i's artifact tensors (what its run changed)
    base/<j>.safetensors            the base weights of model j (the embedder `zoo.create_model` builds),
                                    absent when the file was written with `base_weights="reference"`

Nothing is unpickled. Reading is bounded before anything is decoded (`BundleLimits`): from the zip
directory alone, before any part is read, the number of entries and members, every entry's declared
size, the sum of the declared sizes and each compressed entry's expansion ratio (declared size over
compressed size, at most `max_ratio` for entries above `ratio_free_bytes`: a small file cannot claim
gigabytes) are capped, and a tensors part must be stored uncompressed, as `write_bundle` has always
written it (a stored entry's declared size must equal its stored size). So every tensors part's bytes
are in the file, and only the JSON parts (at most `max_json_bytes` each) are inflated. Each part is
then streamed through sha256 in chunks with a running byte count, stopping past its declared size,
into memory that grows as its bytes arrive (a part cut short never costs its declared size) and is
handed on without a copy; its size and sha256 must match the manifest's before it is decoded. Reading
a file thus holds about the file's size in decoded tensors plus the one part being read. A part that
cannot be decoded (a safetensors header that does not parse, a config outside what zooens writes: an
unknown strategy, an input size beyond `ensemble.specs`' resolution bounds, mean/std of another
length, a head of another class count) is refused too. Every refusal, and a file that is not a zip,
is truncated or lacks a part, is a `BundleError` (a `ConfigError`) naming the part and saying the
file was altered or damaged. Tensor shapes against the architecture are
checked when the members are rebuilt (`load_state_dict` with the strategy's own module).
A checksum detects corruption and edits of any part; it is not a signature (whoever can rewrite the
manifest can rewrite its checksums).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import safetensors
import timm
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from zooens._version import __version__
from zooens.ensemble._registry import get_strategy
from zooens.ensemble.artifacts import Artifact, artifact_models
from zooens.ensemble.specs import MAX_RESOLUTION, MIN_RESOLUTION
from zooens.errors import ConfigError, WeightsMismatchError
from zooens.zoo import create_model, provided_models

log = logging.getLogger(__name__)

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_SUFFIX",
    "BaseModel",
    "Bundle",
    "BundleError",
    "BundleLimits",
    "read_bundle",
    "write_bundle",
]

BUNDLE_FORMAT = "zooens-ensemble"
BUNDLE_VERSION = 1
BUNDLE_SUFFIX = ".zooens"
MANIFEST = "manifest.json"
BaseWeights = Literal["embed", "reference"]


class BundleError(ConfigError):
    """A `.zooens` file that cannot be used: not one, too large, or altered since it was written."""


@dataclass(frozen=True)
class BundleLimits:
    """What `read_bundle` accepts, checked on the zip directory before any part is read.

    max_members : members of one ensemble.
    max_json_bytes : the manifest and each member's config.
    max_part_bytes : one tensors part (a base model's weights: 8 GiB holds a 2-billion-parameter float32 model).
        A tensors part must be stored uncompressed (`write_bundle` never compresses one), so its size is
        also bounded by the file's: a small file cannot make the reader hold more than it contains.
    max_total_bytes : all parts together, as the zip directory declares them.
    max_ratio : most declared size per compressed byte of an entry larger than `ratio_free_bytes`.
        `write_bundle` stores tensors uncompressed (ratio 1) and deflates JSON only; deflate cannot
        exceed about 1032:1, so a part declaring more than 100 times its compressed size is a forgery
        meant to exhaust memory (a 3 MB file declaring a 3 GiB part). A compressed tensors part is
        refused whatever its ratio.
    ratio_free_bytes : entries declaring at most this many bytes are not held to `max_ratio` (JSON of
        repeated keys compresses well, and such a part costs little to read).
    chunk_bytes : each part is read and hashed in chunks of this size.
    """

    max_members: int = 100
    max_json_bytes: int = 4 * 2**20
    max_part_bytes: int = 8 * 2**30
    max_total_bytes: int = 32 * 2**30
    max_ratio: float = 100.0
    ratio_free_bytes: int = 4 * 2**20
    chunk_bytes: int = 2**20

    @property
    def max_entries(self) -> int:
        return 1 + 3 * self.max_members  # the manifest, two parts per member, at most one base per member


@dataclass
class BaseModel:
    """The pre-trained embedder a member starts from: its zoo name, timm architecture, the sha256
    of the zoo's weights file, and the weights themselves (None for a reference)."""

    name: str
    arch: str
    weights_sha256: str
    state: dict[str, torch.Tensor] | None = None

    def build(self) -> nn.Module:
        """The embedder (`num_classes=0`) with the bundled weights, in eval mode; no zoo look-up."""
        if self.state is None:
            raise BundleError(
                f"The file holds only a reference to the weights of {self.name!r}; build it from the "
                "zoo (zooens.zoo.create_model) or export again with the weights embedded."
            )
        try:  # through the zoo's factory, so a layer tap (model@layer) is rebuilt as the cut-down network
            with torch.random.fork_rng(devices=[]), provided_models({self.name: (self.arch, self.state)}):
                model = create_model(self.name, num_classes=0)
        except WeightsMismatchError as exc:
            raise BundleError(
                f"The bundled weights of {self.name!r} do not fit architecture {self.arch!r} "
                f"({exc}); the file is damaged or was written by another timm."
            ) from None
        return model.eval()


@dataclass
class Bundle:
    """What a `.zooens` file holds: members (artifact, ensemble weight), their base models by name,
    the class names, the versions that wrote it and the ensemble's temperature (`ensemble.calibration`:
    predictions are softmax(log p / T); 1.0 for a file written without one)."""

    members: list[tuple[Artifact, float]]
    base_models: dict[str, BaseModel]
    classes: list[str]
    versions: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0


def _temperature(value: Any, shown: str) -> float:
    """A manifest's temperature: a finite positive number (absent: 1.0)."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BundleError(
            f"{shown}: the manifest's temperature {value!r} is not a positive number; the file was altered."
        )
    return float(value)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def versions() -> dict[str, str]:
    """The versions a file records (zooens, torch, timm, safetensors)."""
    return {
        "zooens": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
    }


def write_bundle(
    target: str | Path | IO[bytes],
    members: Sequence[tuple[Artifact, float]],
    base_models: Mapping[str, BaseModel],
    *,
    metadata: Mapping[str, Any] | None = None,
    temperature: float | None = None,
) -> None:
    """Write one `.zooens` file to `target` (a path or a binary stream).

    `base_models` holds every member's models (`artifacts.artifact_models`: `config["model"]`, or each
    of a `concat` probe's `config["models"]`); a `BaseModel` whose `state` is None is
    written as a reference (name, architecture, sha256) only. `temperature`: the ensemble's (None: 1.0).
    """
    if not members:
        raise ConfigError("An ensemble file needs at least one member.")
    try:
        temperature = _temperature(temperature, "the ensemble")
    except BundleError:
        raise ConfigError(f"An ensemble's temperature must be a finite positive number, got {temperature!r}.") from None
    classes = list(members[0][0].config["classes"])
    parts: dict[str, bytes] = {}
    member_rows = []
    for i, (artifact, weight) in enumerate(members):
        if list(artifact.config["classes"]) != classes:
            raise ConfigError("Every member of an ensemble file must be trained on the same classes.")
        model = artifact.config["model"]
        for name in artifact_models(artifact.config):
            if name not in base_models:
                raise ConfigError(f"Member {i} ({name!r}) has no base model entry; give its BaseModel.")
        config_name, tensors_name = f"members/{i}/config.json", f"members/{i}/model.safetensors"
        parts[config_name] = _dumps(artifact.config)
        parts[tensors_name] = save_tensors({k: v.detach().cpu().contiguous() for k, v in artifact.tensors.items()})
        member_rows.append(
            {
                "model": model,
                "strategy": artifact.config["strategy"],
                "weight": float(weight),
                "config": config_name,
                "tensors": tensors_name,
            }
        )
    base_rows = {}
    for j, name in enumerate(sorted({m for a, _ in members for m in artifact_models(a.config)})):
        base = base_models[name]
        row = {"arch": base.arch, "weights_sha256": base.weights_sha256, "tensors": None}
        if base.state is not None:
            row["tensors"] = f"base/{j}.safetensors"
            parts[row["tensors"]] = save_tensors({k: v.detach().cpu().contiguous() for k, v in base.state.items()})
        base_rows[name] = row
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "versions": versions(),
        "classes": classes,
        "members": member_rows,
        "base_models": base_rows,
        "metadata": dict(metadata or {}),
        "temperature": temperature,
        "parts": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in parts.items()},
    }
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST, _dumps(manifest), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in parts.items():
            compress = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
            zf.writestr(name, data, compress_type=compress)


_PART_RE = re.compile(r"^(members/\d{1,4}/(config\.json|model\.safetensors)|base/\d{1,4}\.safetensors)$")


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)
"""What reading a damaged zip entry raises: a bad local header or CRC, a broken deflate stream, a cut-off
file, an unsupported compression method, an encrypted entry."""


def _check_directory(infos: list[zipfile.ZipInfo], limits: BundleLimits, shown: str) -> None:
    """Refuse, from the zip directory alone, entries that claim more than their bytes can hold."""
    total = 0
    for info in infos:
        total += info.file_size
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise BundleError(
                f"{shown}: part {info.filename} is stored uncompressed but declares {info.file_size} bytes "
                f"for {info.compress_size} stored; the file is damaged or was altered."
            )
        if info.file_size > limits.ratio_free_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise BundleError(
                f"{shown}: part {info.filename} declares {info.file_size} bytes compressed into "
                f"{info.compress_size}, an expansion above {limits.max_ratio:g}:1 (BundleLimits.max_ratio); "
                "zooens never writes such a part: the file was forged or damaged."
            )
        if info.filename.endswith(".safetensors") and info.compress_type != zipfile.ZIP_STORED:
            method = zipfile.compressor_names.get(info.compress_type, f"method {info.compress_type}")
            raise BundleError(
                f"{shown}: part {info.filename} is a tensors part stored compressed ({method}); zooens stores "
                "tensors uncompressed and never writes such a part: the file was forged or altered. Export it again."
            )
    if total > limits.max_total_bytes:
        raise BundleError(
            f"{shown} declares {total} bytes in all, more than the {limits.max_total_bytes} "
            "allowed (BundleLimits.max_total_bytes)."
        )


def _read_entry(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    limit: int,
    shown: str,
    *,
    expected: Mapping[str, Any] | None = None,
    chunk: int = 2**20,
) -> bytes:
    """The entry's bytes, read in chunks through sha256 with a running count: never more than `limit`
    nor than its declared size. With `expected` (the manifest's `size` and `sha256`), they must match.

    Memory grows with the bytes that arrive, never to the declared size up front (a part cut short costs
    what it holds), and the result is the buffer itself: `BytesIO.getvalue` hands over its bytes without
    a copy when nothing else references them, so a part is held once."""
    if info.file_size > limit:
        raise BundleError(
            f"{shown}: part {info.filename} declares {info.file_size} bytes, more than the "
            f"{limit} allowed; this is not a file zooens wrote."
        )
    size = info.file_size
    if expected is not None:
        declared = expected.get("size")
        if isinstance(declared, bool) or not isinstance(declared, int) or declared != size:
            raise BundleError(
                f"{shown}: part {info.filename} holds {size} bytes, the manifest says {declared!r}; the file was "
                "altered or damaged since it was written. Export it again."
            )
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    count = 0
    try:
        with zf.open(info) as f:
            while True:
                block = f.read(min(chunk, size - count) if count < size else 1)
                if not block:
                    break
                if count + len(block) > size:
                    raise BundleError(
                        f"{shown}: part {info.filename} holds more than the {size} bytes its directory says; "
                        "the file is damaged or was altered."
                    )
                buffer.write(block)
                digest.update(block)
                count += len(block)
    except BundleError:
        raise
    except _READ_ERRORS as exc:
        raise BundleError(
            f"{shown}: part {info.filename} cannot be read ({type(exc).__name__}: {exc}); the file is damaged "
            "or truncated. Export it again."
        ) from None
    if count != size:
        raise BundleError(f"{shown}: part {info.filename} is not the size its directory says; the file is damaged.")
    if expected is not None and digest.hexdigest() != str(expected.get("sha256")):
        raise BundleError(
            f"{shown}: part {info.filename} does not match its sha256 in the manifest; the file was "
            "altered or damaged since it was written. Export it again."
        )
    return buffer.getvalue()


def read_bundle(source: str | Path | IO[bytes], *, limits: BundleLimits = BundleLimits()) -> Bundle:
    """Read and verify a `.zooens` file (see the module docstring for what is checked)."""
    shown = Path(source).name if isinstance(source, (str, Path)) else "the ensemble file"
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BundleError(f"{shown} is not a zooens ensemble file ({exc}); write one with `zooens export`.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise BundleError(f"{shown} holds {len(infos)} entries; a zooens file has at most {limits.max_entries}.")
        by_name = {info.filename: info for info in infos}
        if len(by_name) != len(infos) or MANIFEST not in by_name:
            raise BundleError(f"{shown} has no single {MANIFEST}; it is not a zooens ensemble file.")
        _check_directory(infos, limits, shown)
        try:
            manifest = json.loads(
                _read_entry(zf, by_name[MANIFEST], limits.max_json_bytes, shown, chunk=limits.chunk_bytes)
            )
            if not isinstance(manifest, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"{shown}: {MANIFEST} is not valid JSON ({exc}); the file is damaged.") from None
        if manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{shown} is not a zooens ensemble file (format {manifest.get('format')!r}).")
        if manifest.get("format_version") != BUNDLE_VERSION:
            raise BundleError(
                f"{shown} has format version {manifest.get('format_version')!r}; this zooens reads "
                f"version {BUNDLE_VERSION}: upgrade zooens or export again."
            )
        try:
            return _decode(zf, by_name, manifest, limits, shown)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(
                f"{shown}: the manifest is malformed ({type(exc).__name__}: {exc}); the file is damaged."
            ) from None


def _decode(
    zf: zipfile.ZipFile, by_name: dict[str, zipfile.ZipInfo], manifest: dict[str, Any], limits: BundleLimits, shown: str
) -> Bundle:
    parts: dict[str, dict[str, Any]] = manifest["parts"]
    unknown = set(by_name) - set(parts) - {MANIFEST}
    if unknown:
        raise BundleError(
            f"{shown} holds parts the manifest does not list ({', '.join(sorted(unknown)[:3])}); the file was altered."
        )

    def part(name: str) -> bytes:
        if not isinstance(name, str) or not _PART_RE.match(name) or name not in parts:
            raise BundleError(f"{shown}: the manifest names an invalid part {name!r}; the file was altered.")
        if name not in by_name:
            raise BundleError(f"{shown}: part {name} is missing; the file is truncated or was altered.")
        limit = limits.max_json_bytes if name.endswith(".json") else limits.max_part_bytes
        expected = parts[name]
        if not isinstance(expected, dict):
            raise BundleError(f"{shown}: the manifest's entry for part {name} is not a mapping; the file was altered.")
        return _read_entry(zf, by_name[name], limit, shown, expected=expected, chunk=limits.chunk_bytes)

    rows = manifest["members"]
    if not isinstance(rows, list) or not 1 <= len(rows) <= limits.max_members:
        raise BundleError(
            f"{shown} lists {len(rows) if isinstance(rows, list) else 'no'} members; "
            f"an ensemble file holds 1 to {limits.max_members}."
        )
    classes = [str(c) for c in manifest["classes"]]
    members: list[tuple[Artifact, float]] = []
    for i, row in enumerate(rows):
        config = _json_part(part(row["config"]), row["config"], shown)
        if not isinstance(config, dict) or list(config.get("classes", [])) != classes:
            raise BundleError(f"{shown}: member {i} has another class list than the file; the file was altered.")
        _check_member_config(config, f"{shown}: member {i} ({row['config']})")
        tensors = _tensors_part(part(row["tensors"]), row["tensors"], shown)
        _check_head(tensors, len(classes), f"{shown}: member {i} ({row['tensors']})")
        weight = float(row["weight"])
        if not (math.isfinite(weight) and weight >= 0):
            raise BundleError(
                f"{shown}: member {i} has weight {weight!r}, not a non-negative number; the file was altered."
            )
        members.append((Artifact(config=config, tensors=tensors), weight))
    base_models = {}
    for name, row in manifest["base_models"].items():
        arch = str(row["arch"])
        if not timm.is_model(arch):
            raise BundleError(
                f"{shown}: base model {name!r} names architecture {arch!r}, which this timm ({timm.__version__}) "
                "does not have; the file was altered, or written by another timm: upgrade timm or export again."
            )
        state = _tensors_part(part(row["tensors"]), row["tensors"], shown) if row.get("tensors") is not None else None
        base_models[str(name)] = BaseModel(
            name=str(name), arch=arch, weights_sha256=str(row["weights_sha256"]), state=state
        )
    missing = {str(m) for a, _ in members for m in (a.config.get("models") or [a.config.get("model")])} - set(
        base_models
    )
    if missing:
        raise BundleError(f"{shown}: no base model entry for {sorted(map(str, missing))}; the file was altered.")
    return Bundle(
        members=members,
        base_models=base_models,
        classes=classes,
        versions={str(k): str(v) for k, v in manifest.get("versions", {}).items()},
        metadata=dict(manifest.get("metadata") or {}),
        temperature=_temperature(manifest.get("temperature"), shown),
    )


def _json_part(data: bytes, name: str, shown: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{shown}: part {name} is not valid JSON ({exc}); the file was altered.") from None


def _tensors_part(data: bytes, name: str, shown: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors part; BundleError when its header or data do not parse."""
    try:
        return load_tensors(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise BundleError(
            f"{shown}: part {name} is not a valid safetensors file ({type(exc).__name__}: {exc}); the file was "
            "altered. Export it again."
        ) from None


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
"""The interpolations a member's data config may name (PIL's resampling filters, as timm names them)."""
CROP_MODES = ("center", "squash", "border")
MIN_CROP_PCT = 0.1
"""Least crop fraction accepted: images are resized to input_size / crop_pct before the crop, so a tiny
fraction would make every image huge."""


def _check_member_config(config: dict[str, Any], where: str) -> None:
    """A member's config holds what zooens writes: a model name, a known strategy, a resolution and
    a data config within `ensemble.specs`' bounds (otherwise decoding an image could ask for any size)."""

    def refuse(what: str) -> BundleError:
        return BundleError(f"{where}: {what}; the file was altered or is not one zooens wrote.")

    model = config.get("model")
    if not isinstance(model, str) or not model:
        raise refuse(f"the model name is {model!r}")
    strategy = config.get("strategy")
    if not isinstance(strategy, str):
        raise refuse(f"the strategy is {strategy!r}")
    try:
        get_strategy(strategy)
    except ConfigError as exc:
        raise refuse(str(exc).rstrip(".")) from None
    resolution = config.get("resolution")
    if resolution is not None and not _pixels(resolution):
        raise refuse(f"the resolution {resolution!r} is not between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels")
    data_cfg = config.get("data_config")
    if not isinstance(data_cfg, dict):
        raise refuse("it has no data config")
    _check_data_config(data_cfg, refuse)
    extra = config.get("data_configs")  # `concat`: one per model
    if extra is not None:
        if not isinstance(extra, list) or not all(isinstance(c, dict) for c in extra):
            raise refuse("its data_configs are not a list of data configs")
        for c in extra:
            _check_data_config(c, refuse)


def _check_data_config(data_cfg: dict[str, Any], refuse: Callable[[str], BundleError]) -> None:
    size = data_cfg.get("input_size")
    if not (
        isinstance(size, list)
        and len(size) == 3
        and size[0] in (1, 3)
        and not isinstance(size[0], bool)
        and all(_pixels(v) for v in size[1:])
    ):
        raise refuse(
            f"the input size {size!r} is not [channels (1 or 3), height, width] with height and width between "
            f"{MIN_RESOLUTION} and {MAX_RESOLUTION} pixels"
        )
    for key in ("mean", "std"):
        values = data_cfg.get(key)
        if not (
            isinstance(values, list)
            and len(values) == size[0]
            and all(_number(v) and (key == "mean" or v > 0) for v in values)
        ):
            kind = "positive numbers" if key == "std" else "numbers"
            raise refuse(f"its {key} {values!r} is not {size[0]} finite {kind}")
    interpolation = data_cfg.get("interpolation", "bicubic")
    if interpolation not in INTERPOLATIONS:
        raise refuse(f"its interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    crop_pct = data_cfg.get("crop_pct", 1.0)
    if crop_pct is not None and not (_number(crop_pct) and MIN_CROP_PCT <= crop_pct <= 1.0):
        raise refuse(f"its crop_pct {crop_pct!r} is not between {MIN_CROP_PCT} and 1")
    crop_mode = data_cfg.get("crop_mode", "center")
    if crop_mode is not None and crop_mode not in CROP_MODES:
        raise refuse(f"its crop_mode {crop_mode!r} is not one of {', '.join(CROP_MODES)}")


def _check_head(tensors: Mapping[str, torch.Tensor], n_classes: int, where: str) -> None:
    """A classifier head saved with a member (`head.weight`, `head.bias`) has one row per class."""
    weight, bias = tensors.get("head.weight"), tensors.get("head.bias")
    if weight is not None and (weight.ndim != 2 or weight.shape[0] != n_classes):
        raise BundleError(
            f"{where}: head.weight has shape {tuple(weight.shape)}, not ({n_classes}, features) for the file's "
            f"{n_classes} classes; the file was altered."
        )
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != n_classes):
        raise BundleError(
            f"{where}: head.bias has shape {tuple(bias.shape)}, not ({n_classes},); the file was altered."
        )


def _pixels(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and MIN_RESOLUTION <= value <= MAX_RESOLUTION


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
