"""Structured pruning: mask whole Linear neurons, conv channels (with their BatchNorm channel) or attention heads.

Li et al. 2017 ("Pruning Filters for Efficient ConvNets", L1 filter norms), Liu et al. 2017 ("Network Slimming",
BatchNorm scale), Michel et al. 2019 (attention heads). Masking keeps shapes (a torch.nn.utils.prune mask zeroes
the unit's weights, bias and BatchNorm affine parameters, so the unit outputs exactly zero); ``shrink`` then
removes the zeroed units everywhere they are coupled, which is what makes the model smaller and faster.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import CompressionError
from ..targets import resolve_targets
from ..technique import StepConfig, StepContext, register
from ..targets import classifier_name
from .common import attention_types, check_overrides, coupling_plan, mask_count
from .importance import head_scores, unit_scores


class StructuredPruneConfig(StepConfig):
    """Mask ``amount`` of the output units (neurons, conv channels or attention heads) of each selected layer,
    the lowest-scoring first; ``round(amount * units)`` per layer, at least one unit must remain."""

    kind: Literal["prune_structured"] = "prune_structured"
    amount: float = Field(default=0.5, ge=0, lt=1)
    unit: Literal["neurons", "channels", "heads"] = "channels"
    importance: Literal["l1", "l2", "random"] = "l1"
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    overrides: dict[str, float] = Field(default_factory=dict)
    include_classifier: bool = False


_TYPES = {"neurons": (nn.Linear,), "channels": (nn.Conv2d,)}


def _select(model: nn.Module, cfg: StructuredPruneConfig, ctx: StepContext | None) -> list[str]:
    classifier = classifier_name(model, ctx)
    types = _TYPES.get(cfg.unit) or attention_types(model)
    if not types:
        raise CompressionError("unit: 'heads' needs attention layers (qkv + proj); this model has none")
    asked = cfg.include_classifier or (cfg.targets is not None and classifier in cfg.targets)
    if classifier is not None and asked and classifier in resolve_targets(model, cfg.targets, cfg.ignore, types,
                                                                          classifier, True):
        raise CompressionError(f"targets: {classifier!r} is the classifier; pruning its outputs would remove "
                               f"classes; leave it out (include_classifier=false)")
    chosen = resolve_targets(model, cfg.targets, cfg.ignore, types, classifier, cfg.include_classifier)
    plan = coupling_plan(model)
    prunable = [n for n, g in plan.items() if g.unit == cfg.unit]
    for name in chosen:
        if name not in plan or plan[name].unit != cfg.unit:
            if cfg.targets is None or name not in cfg.targets:  # patterns select only prunable layers
                continue
            raise CompressionError(f"targets: the {cfg.unit} of {name!r} cannot be removed (its outputs feed a "
                                   f"coupled dimension such as a residual stream or the output); prunable: "
                                   f"{', '.join(prunable) or 'none'}")
    chosen = [n for n in chosen if n in plan and plan[n].unit == cfg.unit]
    if not chosen:
        raise CompressionError(f"unit: this model has no prunable {cfg.unit}; check unit, targets and ignore")
    return chosen


def _unit_mask(n: int, scores: torch.Tensor, amount: float, name: str, what: str) -> torch.Tensor:
    """(n,) 0/1 mask removing the ``round(amount * n)`` lowest-scoring units (ties: lower index first)."""
    k = mask_count(n, amount)
    if k >= n:
        raise CompressionError(f"amount: {amount} would prune every {what} of {name!r} ({n}); it must leave at "
                               f"least one: use amount < {(n - 0.5) / n:.4f}")
    keep = torch.ones(n)
    if k:
        order = torch.argsort(scores, stable=True)
        keep[order[:k]] = 0
    return keep


def _mask_rows(module: nn.Module, keep: torch.Tensor) -> None:
    """Mask whole output rows (dim 0) of ``weight`` and ``bias`` with torch.nn.utils.prune.custom_from_mask."""
    for pname in ("weight", "bias"):
        t = getattr(module, pname, None)
        if t is not None:
            shape = (-1,) + (1,) * (t.dim() - 1)
            torch_prune.custom_from_mask(module, pname, mask=keep.reshape(shape).expand_as(t).clone())


def _mask_heads(attn: nn.Module, keep: torch.Tensor) -> None:
    """Mask a head's q, k, v rows of ``qkv`` (weight and bias) and its input columns of ``proj``."""
    d = attn.head_dim
    rows = keep.repeat_interleave(d).repeat(3)  # (3*H*d,) in the [q heads | k heads | v heads] layout
    _mask_rows(attn.qkv, rows)
    cols = keep.repeat_interleave(d)  # (H*d,)
    w = attn.proj.weight
    torch_prune.custom_from_mask(attn.proj, "weight", mask=cols.reshape(1, -1).expand_as(w).clone())


def prune_structured(model: nn.Module, cfg: StructuredPruneConfig, ctx: StepContext | None = None) -> nn.Module:
    """Apply ``cfg`` in place (the registered handler gets a copy) and return the model."""
    chosen = _select(model, cfg, ctx)
    check_overrides(cfg.overrides, chosen)
    plan = coupling_plan(model)
    gen = torch.Generator().manual_seed(ctx.seed if ctx is not None else 0)
    masks = {}
    for name in chosen:  # score everything first, then mask (a mask never changes another layer's scores)
        module = model.get_submodule(name)
        amount = cfg.overrides.get(name, cfg.amount)
        if cfg.unit == "heads":
            masks[name] = _unit_mask(module.n_heads, head_scores(module, cfg.importance, gen), amount, name, "head")
        else:
            group = plan[name]
            bn = model.get_submodule(group.bn) if group.bn else None
            n = module.weight.shape[0]
            what = "channel" if cfg.unit == "channels" else "neuron"
            masks[name] = _unit_mask(n, unit_scores(module, cfg.importance, bn, gen), amount, name, what)
    for name, keep in masks.items():
        module = model.get_submodule(name)
        if cfg.unit == "heads":
            _mask_heads(module, keep)
        else:
            _mask_rows(module, keep)
            if plan[name].bn:
                _mask_rows(model.get_submodule(plan[name].bn), keep)
    return model


@register(StructuredPruneConfig)
def _structured_step(model: nn.Module, cfg: StructuredPruneConfig, ctx: StepContext) -> nn.Module:
    return prune_structured(model, cfg, ctx)
