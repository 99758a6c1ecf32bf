"""Helpers for tests across zooens: tiny timm models with seeded random weights as user models."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from zooens.zoo._types import WeightSet
from zooens.zoo._user import add_user_model

logger = logging.getLogger(__name__)

SEED = 0


def register_random_model(name: str, arch: str, directory: str | os.PathLike[str], *, seed: int = SEED) -> WeightSet:
    """Write `arch` with seeded random weights to DIRECTORY/NAME.safetensors and register it as user model `name`.

    The same (arch, seed) always gives the same tensors; the global RNG is left untouched.
    Registering an existing name replaces it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path = directory / f"{name}.safetensors"
    save_file(state, str(path))
    logger.debug("random %s weights for %s written to %s", arch, name, path)
    return add_user_model(name, arch, path, overwrite=True)
