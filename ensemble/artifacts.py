"""What a fine-tune run saves, and how to rebuild the classifier from it.

An artifact is a JSON config plus only the tensors the run changed; `load_artifact_model`
asks the run's strategy to rebuild a module mapping preprocessed images to logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from zooens.ensemble._registry import get_strategy
from zooens.errors import NotFoundError
from zooens.utils import resolve_device

__all__ = ["CONFIG_FILE", "TENSORS_FILE", "Artifact", "artifact_models", "load_artifact_model"]

CONFIG_FILE = "config.json"
TENSORS_FILE = "model.safetensors"


@dataclass
class Artifact:
    """What a run saves: a JSON-able config and the tensors the run changed (nothing else).

    `config` always holds `model` (the model's name), `strategy`, `classes`, `hparams` and
    `data_config` (the timm preprocessing used), plus whatever the strategy needs to rebuild
    the module.
    """

    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def models(self) -> list[str]:
        """The zoo models whose networks the run's classifier is built on (`artifact_models`)."""
        return artifact_models(self.config)

    @property
    def nbytes(self) -> int:
        """Size of the saved tensors in bytes."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def numel(self) -> int:
        """Number of values in the saved tensors."""
        return sum(t.numel() for t in self.tensors.values())

    def save(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory` (created); return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, sort_keys=True, default=_json_default))
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.tensors.items()}
        save_file(tensors, str(directory / TENSORS_FILE))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Artifact:
        """Read an artifact written by `save`."""
        directory = Path(directory)
        config_path, tensors_path = directory / CONFIG_FILE, directory / TENSORS_FILE
        if not config_path.is_file() or not tensors_path.is_file():
            raise NotFoundError(
                f"No fine-tune artifact in {directory}: expected {CONFIG_FILE} and {TENSORS_FILE} "
                "as written by Artifact.save; check the path or re-run the fine-tune."
            )
        config = json.loads(config_path.read_text())
        return cls(config=config, tensors=load_file(str(tensors_path)))


def artifact_models(config: dict[str, Any]) -> list[str]:
    """The zoo models a saved run's classifier is built on: `config["models"]` for a run over several
    (strategy `concat`), else `[config["model"]]`. An ensemble file stores the base weights of each."""
    models = config.get("models")
    if isinstance(models, list) and models:
        return [str(m) for m in models]
    return [str(config["model"])]


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_artifact_model(
    artifact: Artifact | str | Path, *, device: str = "cpu", backbone: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved run: (module images -> logits, its timm data config)."""
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    strategy = get_strategy(artifact.config.get("strategy", ""))
    if backbone is not None and not strategy.shares_backbone:
        backbone = None
    module = strategy.load(artifact, device=resolve_device(device), backbone=backbone)
    return module, strategy.data_config(artifact)
