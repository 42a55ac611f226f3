"""Structured pruning: mask whole coupled groups of conv channels, Linear neurons or attention heads.

Li et al. 2017 ("Pruning Filters for Efficient ConvNets", L1 filter norms), Fang et al. 2023 ("DepGraph": coupled
groups scored as one), Liu et al. 2017 ("Network Slimming", BatchNorm scale), Michel et al. 2019 (attention heads).
The groups come from the traced graph (``compression_core.graph``): a channel of a residual stream is removed from
every conv that adds into it, a depthwise conv's channel with the channel it reads, a conv channel from the Linear
columns it becomes after a flatten, a concatenated slice from every layer reading the concatenation. Masking keeps
shapes (a torch.nn.utils.prune mask zeroes the unit's rows, biases and BatchNorm affine parameters in every member,
so the unit outputs exactly zero everywhere); ``shrink`` then removes exactly those units.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import CompressionError
from ..graph import CONVS, RECURRENT, Group, HeadGroup, ModelGraph, build_graph, example_inputs, out_dim
from ..targets import _matches, classifier_name, resolve_targets
from ..technique import StepConfig, StepContext, register, TechniqueUI
from .common import check_overrides, mask_count
from .importance import group_scores, head_group_scores


class StructuredPruneConfig(StepConfig):
    """Mask ``amount`` of the units (neurons, conv channels or attention heads) of each selected coupled group,
    the lowest-scoring first; ``round(amount * units)`` per group, at least one unit must remain."""

    kind: Literal["prune_structured"] = "prune_structured"
    ui = TechniqueUI(family="prune", label="structured (neurons / channels / heads)",
                     layer_types=("Linear", "Conv1D", "Conv1d", "Conv2d", "Conv3d", "MultiheadAttention"), order=20)
    amount: float = Field(default=0.5, ge=0, lt=1)
    unit: Literal["neurons", "channels", "heads"] = "channels"
    importance: Literal["l1", "l2", "random", "bn_scale"] = "l1"
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    overrides: dict[str, float] = Field(default_factory=dict)
    include_classifier: bool = False


_TYPES = {"neurons": (nn.Linear,), "channels": CONVS}


def graph_for(model: nn.Module, ctx: StepContext | None, field_name: str = "data") -> ModelGraph:
    """The model's coupled groups, traced on a few inputs of the workload in ``ctx``."""
    return build_graph(model, example_inputs(ctx, field_name))


def _prunable_list(graph: ModelGraph, unit: str) -> str:
    return ", ".join(graph.units(unit)) or "none"


def select_groups(model: nn.Module, graph: ModelGraph, unit: str, targets: list[str] | None, ignore: list[str],
                  classifier: str | None, include_classifier: bool = False, types=None
                  ) -> tuple[dict[str, Group | HeadGroup], list[str]]:
    """({group name: group} selected by ``targets`` / ``ignore``, the selected layer names).

    A group is selected when one of its producers is selected and none is ignored (a residual stream is removed
    from all of its convs or from none). An exact target whose units cannot be removed is a one-line error with the
    reason; patterns select only prunable groups.
    """
    if unit == "heads":
        if not graph.heads:
            raise CompressionError("unit: 'heads' needs attention layers (scaled_dot_product_attention on projected "
                                   "q, k, v, or nn.MultiheadAttention); this model has none")
        types = tuple({type(model.get_submodule(n)) for n in graph.heads})
    types = types or _TYPES[unit]
    if targets is not None:
        for t in targets:
            if not t.startswith("re:") and t in dict(model.named_modules()) and isinstance(
                    model.get_submodule(t), RECURRENT):
                raise CompressionError(f"targets: {t!r} is a {type(model.get_submodule(t)).__name__}: its hidden "
                                       f"size is not pruned (its gates interleave the units); prune the Linear "
                                       f"layers around it; prunable {unit}: {_prunable_list(graph, unit)}")
    asked = include_classifier or (targets is not None and classifier in targets)
    if classifier is not None and asked and classifier in resolve_targets(model, targets, ignore, types, classifier,
                                                                          True):
        raise CompressionError(f"targets: {classifier!r} is the classifier; pruning its outputs would remove "
                               f"classes; leave it out (include_classifier=false)")
    chosen = resolve_targets(model, targets, ignore, types, classifier, include_classifier)
    ignored = {n for n, _ in model.named_modules() if n and any(_matches(n, p) for p in ignore)}
    if targets is not None:
        for t in targets:
            if t.startswith("re:") or t not in chosen:
                continue
            g = graph.group_of(t, unit)
            if g is None:
                raise CompressionError(f"targets: the {unit} of {t!r} cannot be removed (the traced graph has no "
                                       f"{unit} produced by it); prunable: {_prunable_list(graph, unit)}")
            if g.reason is not None:
                raise CompressionError(f"targets: the {unit} of {t!r} cannot be removed: {g.reason}; prunable: "
                                       f"{_prunable_list(graph, unit)}")
    selected = {}
    for name, g in graph.units(unit).items():
        prods = [name] if unit == "heads" else g.producers
        if any(p in chosen for p in prods) and not any(p in ignored for p in prods):
            selected[name] = g
    if not selected:
        refused = graph.refused(unit)
        why = "; refused: " + "; ".join(f"{n}: {r}" for n, r in list(refused.items())[:3]) if refused else ""
        raise CompressionError(f"unit: this model has no prunable {unit}; check unit, targets and ignore{why}")
    return selected, chosen


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


def _mask_dim(module: nn.Module, pname: str, dim: int, gone: list[int]) -> None:
    """Zero the slices ``gone`` of ``module.<pname>`` along ``dim`` with a torch.nn.utils.prune mask."""
    t = getattr(module, pname, None)
    if t is None or not gone:
        return
    mask = torch.ones_like(t)
    mask.index_fill_(dim, torch.as_tensor(gone, dtype=torch.long), 0)
    torch_prune.custom_from_mask(module, pname, mask=mask)


def _mask_rows(module: nn.Module, keep: torch.Tensor) -> None:
    """Mask whole output rows (dim 0) of ``weight`` and ``bias`` with torch.nn.utils.prune.custom_from_mask."""
    gone = torch.nonzero(keep == 0).reshape(-1).tolist()
    for pname in ("weight", "bias"):
        _mask_dim(module, pname, 0, gone)


def mask_group(model: nn.Module, group: Group, keep: torch.Tensor) -> None:
    """Zero the units ``keep == 0`` of a coupled group in every member that produces them: conv/Linear rows and
    biases, depthwise conv channels, BatchNorm scale and shift, Embedding columns."""
    units = torch.nonzero(keep == 0).reshape(-1).tolist()
    for m in group.members:
        gone = sorted({i for u in units for i in m.idxs[u]})
        mod = model.get_submodule(m.name)
        if m.kind in ("out", "depthwise"):
            _mask_dim(mod, "weight", out_dim(mod), gone)
            _mask_dim(mod, "bias", 0, gone)
        elif m.kind == "norm":
            _mask_dim(mod, "weight", 0, gone)
            _mask_dim(mod, "bias", 0, gone)
        elif m.kind == "embed":
            _mask_dim(mod, "weight", 1, gone)


def mask_heads(model: nn.Module, heads: HeadGroup, keep: torch.Tensor) -> None:
    """Zero the q, k, v rows of the heads ``keep == 0`` in their projections and their input columns of the output
    projection (a masked head's output is exactly zero)."""
    gone = torch.nonzero(keep == 0).reshape(-1)
    if not len(gone):
        return
    for pname, rows in heads.producers.items():
        mod = model.get_submodule(pname)
        r = rows[gone].reshape(-1).tolist()
        if heads.kind == "mha":
            _mask_dim(mod, "in_proj_weight", 0, r)
            _mask_dim(mod, "in_proj_bias", 0, r)
        else:
            _mask_dim(mod, "weight", out_dim(mod), r)  # rows of a Linear, columns of a Conv1D's (in, out) weight
            _mask_dim(mod, "bias", 0, r)
    cons = model.get_submodule(heads.consumer)
    _mask_dim(cons, "weight", 1 - out_dim(cons), heads.columns[gone].reshape(-1).tolist())


def prune_structured(model: nn.Module, cfg: StructuredPruneConfig, ctx: StepContext | None = None) -> nn.Module:
    """Apply ``cfg`` in place (the registered handler gets a copy) and return the model."""
    graph = graph_for(model, ctx)
    selected, chosen = select_groups(model, graph, cfg.unit, cfg.targets, cfg.ignore, classifier_name(model, ctx),
                                     cfg.include_classifier)
    check_overrides(cfg.overrides, chosen)
    gen = torch.Generator().manual_seed(ctx.seed if ctx is not None else 0)
    what = {"channels": "channel", "neurons": "neuron", "heads": "head"}[cfg.unit]
    masks = {}
    for name, g in selected.items():  # score everything first, then mask (a mask never changes another's scores)
        prods = [name] if cfg.unit == "heads" else g.producers
        amount = next((cfg.overrides[p] for p in prods if p in cfg.overrides), cfg.amount)
        if cfg.unit == "heads":
            if cfg.importance == "bn_scale":
                raise CompressionError("importance: 'bn_scale' scores BatchNorm channels; heads take l1, l2 or random")
            scores = head_group_scores(model, g, cfg.importance, gen)
        else:
            if cfg.importance == "bn_scale" and not any(m.kind == "norm" for m in g.members):
                raise CompressionError(f"importance: 'bn_scale' needs a BatchNorm after {name!r}; use l1, l2 or "
                                       f"random, or ignore {name!r}")
            scores = group_scores(g, cfg.importance, gen, model)
        if getattr(g, "chunks", 1) > 1:  # grouped convs: the same positions in every group (as Torch-Pruning does)
            per = _unit_mask(g.size // g.chunks, scores.reshape(g.chunks, -1).mean(0), amount, name, what)
            masks[name] = per.repeat(g.chunks)
            continue
        masks[name] = _unit_mask(g.size, scores, amount, name, what)
    for name, keep in masks.items():
        if cfg.unit == "heads":
            mask_heads(model, selected[name], keep)
        else:
            mask_group(model, selected[name], keep)
    if ctx is not None:
        left = "; ".join(f"{n}: {r}" for n, r in graph.refused(cfg.unit).items())
        ctx.report(1.0, f"masked {what}s of " + ", ".join(f"{n} {int((k == 0).sum())}/{len(k)}" for n, k in
                                                        masks.items()) + (f"; not prunable: {left}" if left else ""))
    return model


@register(StructuredPruneConfig)
def _structured_step(model: nn.Module, cfg: StructuredPruneConfig, ctx: StepContext) -> nn.Module:
    return prune_structured(model, cfg, ctx)
