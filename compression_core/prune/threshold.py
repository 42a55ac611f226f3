"""Threshold pruning (Han et al. 2015): remove every weight whose magnitude is below a threshold.

``scale="absolute"`` uses the threshold as is, the same for every layer (one global cut); ``scale="std"`` multiplies
it by each layer's weight standard deviation (Han et al.'s per-layer "quality parameter"). ``overrides`` set a
layer's own threshold.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..technique import StepConfig, StepContext, register, TechniqueUI
from .common import check_overrides
from ..measure import effective_weight
from .unstructured import select_layers


class ThresholdPruneConfig(StepConfig):
    """Zero the weights with |w| < threshold (times the layer's weight std when ``scale="std"``)."""

    kind: Literal["prune_threshold"] = "prune_threshold"
    ui = TechniqueUI(family="prune", label="threshold (|w| below a value)",
                     layer_types=("Linear", "Conv1D", "Conv2d"), storage="sparse", order=30)
    threshold: float = Field(default=0.01, ge=0)
    scale: Literal["absolute", "std"] = "absolute"
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    overrides: dict[str, float] = Field(default_factory=dict)
    include_classifier: bool = False


def prune_threshold(model: nn.Module, cfg: ThresholdPruneConfig, ctx: StepContext | None = None) -> nn.Module:
    """Apply ``cfg`` in place and return the model; masks via torch.nn.utils.prune.custom_from_mask."""
    chosen = select_layers(model, cfg, ctx)
    check_overrides(cfg.overrides, chosen, hi=float("inf"))
    for name in chosen:
        module = model.get_submodule(name)
        w = effective_weight(module)
        t = cfg.overrides.get(name, cfg.threshold)
        if cfg.scale == "std" and name not in cfg.overrides:
            t = t * float(w.std())
        torch_prune.custom_from_mask(module, "weight", mask=(w.abs() >= t).to(w.dtype))
    return model


@register(ThresholdPruneConfig)
def _threshold_step(model: nn.Module, cfg: ThresholdPruneConfig, ctx: StepContext) -> nn.Module:
    return prune_threshold(model, cfg, ctx)
