"""One-file ensembles (`.zooens`): every member's saved run, the base weights, preprocessing and
class names in one zip of JSON and safetensors, checksummed part by part.

Layout (format version 1)::

    manifest.json                   what the file holds, versions, the ensemble's temperature, and the
                                    sha256 and size of every part
    members/<i>/config.json         member i's artifact config (model, strategy, classes, data_config, ...)
    members/<i>/model.safetensors   member i's artifact tensors (what its run changed)
    base/<j>.safetensors            the base weights of model j (the embedder `zoo.create_model` builds),
                                    absent when the file was written with `base_weights="reference"`

Nothing is unpickled. Reading is bounded before anything is decoded: the number of zip entries and
members, every entry's declared size (from the zip directory) and the JSON sizes are capped, each
part is read to at most its declared size, and its sha256 must match the manifest's, otherwise
`BundleError` (a `ConfigError`) says which part and that the file was altered or truncated. Tensor
shapes are checked when the members are rebuilt (`load_state_dict` with the strategy's own module).
A checksum detects corruption and edits of any part; it is not a signature (whoever can rewrite the
manifest can rewrite its checksums).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
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
from zooens.ensemble.artifacts import Artifact
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
    """What `read_bundle` accepts, checked on the zip directory before any part is read."""

    max_members: int = 100
    max_json_bytes: int = 4 * 2**20
    max_part_bytes: int = 8 * 2**30
    max_total_bytes: int = 32 * 2**30

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

    `base_models` holds every member's `config["model"]`; a `BaseModel` whose `state` is None is
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
        if model not in base_models:
            raise ConfigError(f"Member {i} ({model!r}) has no base model entry; give its BaseModel.")
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
    for j, name in enumerate(sorted({a.config["model"] for a, _ in members})):
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


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, shown: str) -> bytes:
    """The entry's bytes, never more than `limit` nor than its declared size."""
    if info.file_size > limit:
        raise BundleError(
            f"{shown}: part {info.filename} declares {info.file_size} bytes, more than the "
            f"{limit} allowed; this is not a file zooens wrote."
        )
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise BundleError(f"{shown}: part {info.filename} is not the size its directory says; the file is damaged.")
    return data


def read_bundle(source: str | Path | IO[bytes], *, limits: BundleLimits = BundleLimits()) -> Bundle:
    """Read and verify a `.zooens` file (see the module docstring for what is checked)."""
    shown = Path(source).name if isinstance(source, (str, Path)) else "the ensemble file"
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{shown} is not a zooens ensemble file ({exc}); write one with `zooens export`.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise BundleError(f"{shown} holds {len(infos)} entries; a zooens file has at most {limits.max_entries}.")
        by_name = {info.filename: info for info in infos}
        if len(by_name) != len(infos) or MANIFEST not in by_name:
            raise BundleError(f"{shown} has no single {MANIFEST}; it is not a zooens ensemble file.")
        total = sum(info.file_size for info in infos)
        if total > limits.max_total_bytes:
            raise BundleError(
                f"{shown} declares {total} bytes in all, more than the {limits.max_total_bytes} "
                "allowed (BundleLimits.max_total_bytes)."
            )
        try:
            manifest = json.loads(_read_entry(zf, by_name[MANIFEST], limits.max_json_bytes, shown))
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
        data = _read_entry(zf, by_name[name], limit, shown)
        expected = parts[name]
        if len(data) != int(expected["size"]) or _sha256(data) != str(expected["sha256"]):
            raise BundleError(
                f"{shown}: part {name} does not match its sha256 in the manifest; the file was "
                "altered or damaged since it was written. Export it again."
            )
        return data

    rows = manifest["members"]
    if not isinstance(rows, list) or not 1 <= len(rows) <= limits.max_members:
        raise BundleError(
            f"{shown} lists {len(rows) if isinstance(rows, list) else 'no'} members; "
            f"an ensemble file holds 1 to {limits.max_members}."
        )
    classes = [str(c) for c in manifest["classes"]]
    members: list[tuple[Artifact, float]] = []
    for i, row in enumerate(rows):
        config = json.loads(part(row["config"]))
        if not isinstance(config, dict) or list(config.get("classes", [])) != classes:
            raise BundleError(f"{shown}: member {i} has another class list than the file; the file was altered.")
        tensors = load_tensors(part(row["tensors"]))
        weight = float(row["weight"])
        members.append((Artifact(config=config, tensors=tensors), weight))
    base_models = {}
    for name, row in manifest["base_models"].items():
        state = load_tensors(part(row["tensors"])) if row.get("tensors") is not None else None
        base_models[str(name)] = BaseModel(
            name=str(name), arch=str(row["arch"]), weights_sha256=str(row["weights_sha256"]), state=state
        )
    missing = {a.config.get("model") for a, _ in members} - set(base_models)
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
