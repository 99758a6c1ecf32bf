"""The adapter methods of `zooens.ensemble.adapters` as fine-tuning strategies: `patch`, `lora`
and `kron` (`film`, FiT, is in `strategies/film.py`).

Each run saves only the updated tensors (adapter parameters and the head) and reports their
count and size; `load` builds the pre-trained backbone again and re-applies the update.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, ClassVar

import torch
from torch import nn

from zooens.ensemble._registry import register_strategy
from zooens.ensemble.adapters import (
    AdapterConfig,
    apply_tensors,
    get_adapter,
    inject,
    make_config,
)
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.strategies.base import ImageClassifier, ImageStrategy, check_training_options, embedding_dim
from zooens.errors import ConfigError
from zooens.zoo import WeightSet, create_model, get_weight_set

log = logging.getLogger(__name__)

__all__ = ["ADAPTER_SWEEP", "AdapterStrategy", "KronStrategy", "LoraStrategy", "PatchStrategy"]

# The adapter sweep, shared by patch, lora and kron (all trained with SGD, momentum 0.9, and the
# BiT schedule of `ensemble.training`):
# - steps: 500, the length of BiT's hyper-rule for datasets under 20k examples (Kolesnikov et al.
#   2020); at batch 32 that is 20 epochs of a VTAB-1k task (800 images). The PEFT papers train
#   longer (about 100 epochs on VTAB-1k); raise `steps` when the budget allows.
# - learning rates 0.01 and 0.05: above BiT's 0.003 for whole networks, because these methods
#   train a few parameters each of which must move further (the scales and biases of a patch;
#   LoRA and KAdaptation factors whose update is scaled by alpha / r). KAdaptation's alpha is set
#   so that a step at these rates moves the adapted weights about as far as a full fine-tuning
#   step at the same rate (see `zooens.ensemble.adapters.kron.KronConfig`). The authors' own
#   sweeps (Mudrakarta et al.: RMSProp; He et al.: SGD over 1e-6..1e-1 with a weight-decay
#   search) used other optimisers and budgets, so their numbers do not carry over as such.
ADAPTER_SWEEP = SweepConfig(learning_rates=(0.01, 0.05), steps=(500,), batch_size=32)


class AdapterStrategy(ImageStrategy):
    """A frozen backbone with an adapter, plus a zero-initialised linear head.

    Options: the adapter method's config fields, and the training options of `ImageStrategy`.
    """

    method: ClassVar[str] = ""
    freeze_norm_stats: ClassVar[bool] = True
    default_sweep: ClassVar[SweepConfig] = ADAPTER_SWEEP

    def check_options(self, options: dict[str, Any]) -> None:
        """The adapter's config must build from `options` (unknown keys and bad values fail), and the shared
        training options must be in range (`check_training_options`)."""
        make_config(self.method, options)
        check_training_options(self.name, options)

    def supports(self, model_name: str, options: dict[str, Any]) -> str | None:
        """The adapter applied to `model_name`'s embedder built on the meta device (no weights, no memory): the
        ConfigError it raises (kron on a network with no attention `qkv`, FiLM on a family FiT does not
        place) is the reason; None when it applies."""
        ws = get_weight_set(model_name)
        key = (self.method, ws.arch, ws.layer, json.dumps(options, sort_keys=True, default=str))
        with _unsupported_lock:
            if key in _unsupported:
                return _unsupported[key]
        why = _check_on_meta(self.method, ws, options)
        with _unsupported_lock:
            _unsupported[key] = why
        return why

    def _backbone(
        self, model_name: str, options: dict[str, Any] | AdapterConfig
    ) -> tuple[nn.Module, AdapterConfig, list[nn.Parameter], list[str]]:
        backbone = create_model(model_name, num_classes=0)
        config = options if isinstance(options, AdapterConfig) else make_config(self.method, options)
        params = inject(backbone, self.method, config)
        keys = get_adapter(self.method).saved_keys(backbone, config, params)
        return backbone, config, params, keys

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
        backbone, config, params, keys = self._backbone(spec.model_name, spec.options)
        head = nn.Linear(embedding_dim(backbone, data_cfg), n_classes)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        model = ImageClassifier(backbone, head)
        model._adapter = (config, ["backbone." + k for k in keys] + ["head.weight", "head.bias"])
        return model, params + list(head.parameters())

    def artifact_tensors(self, model: nn.Module, spec: RunSpec) -> dict[str, torch.Tensor]:
        state = model.state_dict()
        return {k: state[k].detach().cpu().clone() for k in model._adapter[1]}

    def artifact_config(self, model: nn.Module, spec: RunSpec) -> dict[str, Any]:
        return {"adapter": {"method": self.method, "config": model._adapter[0].to_dict()}}

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        saved = get_adapter(self.method).config_cls.from_saved(artifact.config["adapter"]["config"])
        backbone, _, _, _ = self._backbone(artifact.config["model"], saved)
        head = nn.Linear(artifact.tensors["head.weight"].shape[1], len(artifact.config["classes"]))
        model = ImageClassifier(backbone, head)
        apply_tensors(model, artifact.tensors)
        return model.eval().to(device)


_unsupported: dict[tuple[str, str, str | None, str], str | None] = {}
"""`AdapterStrategy.supports` per (adapter, architecture, tap layer, options as JSON): what it checks depends on
the network's modules alone, which tags of one architecture share (`create_model(..., pretrained=False)` builds the
bare architecture), so a catalogue zoo of many tags builds each architecture once."""
_unsupported_lock = threading.Lock()


def _check_on_meta(method: str, ws: WeightSet, options: dict[str, Any]) -> str | None:
    config = make_config(method, options)
    try:
        with torch.device("meta"):
            inject(create_model(ws, pretrained=False), method, config)
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001  a set-up the meta device cannot run: the run itself decides
        log.debug("%s on %s not checked on the meta device: %s: %s", method, ws.name, type(exc).__name__, exc)
    return None


@register_strategy("patch")
class PatchStrategy(AdapterStrategy):
    """Model patch (Mudrakarta et al. 2018): normalisation scales and biases train.

    Options: `depthwise=True` adds the depthwise convolutions (the paper's depthwise patch);
    `biases=True` adds every convolution and linear bias (BitFit, not the paper's patch).
    """

    method = "patch"


@register_strategy("lora")
class LoraStrategy(AdapterStrategy):
    """LoRA (Hu et al. 2021): low-rank updates of W_q and W_v in every attention layer by default (a fused qkv
    masked to its query and value rows); a model without attention (a CNN) adapts every linear layer and 1x1
    convolution instead. Options: `rank` (4), `alpha` (8), `targets` ('auto', 'qv',
    'all-linear'), `include_conv1x1`, `target` (a name filter). See `zooens.ensemble.adapters.lora`."""

    method = "lora"


@register_strategy("kron")
class KronStrategy(AdapterStrategy):
    """KAdaptation (He et al. 2022) of a ViT's query and value projections.

    Options: `n_kron` (n, default 32), `rank` (r of each B_i, default 1), `alpha` (scale alpha / r).
    """

    method = "kron"
