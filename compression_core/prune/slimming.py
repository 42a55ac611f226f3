"""Network Slimming (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming").

Train with an L1 penalty on the BatchNorm scale factors (``loss = CE + penalty * sum |gamma|``), which drives the
scales of unneeded channels toward zero; then remove the channels with the smallest ``|gamma|`` (per layer or
with one global threshold) and shrink. A channel's BatchNorm scale multiplies its whole normalised output, so a
near-zero gamma marks a channel the network has learned to do without.

Scoring (``bn_group_scores``: mean |gamma| over the BatchNorms of a coupled group) is separate from removal: the
groups come from the traced graph (a residual stream's channels are scored over every BatchNorm adding into it)
and the masks are ``prune_structured``'s (rows, biases and BatchNorm affine parameters zeroed in every member);
``shrink`` removes them.

Replay (bundles, validate): no training; ``scope="layer"`` removes ``round(amount * channels)`` per layer, so the
shapes are the same as after training. ``scope="global"`` picks each layer's count from the trained scales, which
a replay cannot know: with ``shrink=True`` it refuses to replay (use ``scope="layer"`` for a reloadable recipe).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import CompressionError
from ..graph import CONVS, Group, ModelGraph, out_dim
from ..targets import _matches, classifier_name, resolve_targets
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ..train import FineTuneConfig, fine_tune
from .common import mask_count
from .importance import bn_group_scores
from .shrink import shrink
from .structured import _unit_mask, graph_for, mask_group


class SlimmingConfig(StepConfig):
    """Sparsity training with ``penalty * sum |gamma|`` for ``epochs``, then remove ``amount`` of the channels
    (neurons) with the smallest BatchNorm scale, per layer or globally, and shrink."""

    kind: Literal["network_slimming"] = "network_slimming"
    ui = TechniqueUI(family="prune", label="network slimming (BatchNorm scales)", trains=True,
                     layer_types=("BatchNorm1d", "BatchNorm2d"), storage="shrunk", order=60)
    amount: float = Field(default=0.5, ge=0, lt=1)
    scope: Literal["layer", "global"] = "layer"
    penalty: float = Field(default=3e-2, ge=0, le=10.0)  # lambda of the L1 term on BatchNorm scales
    epochs: int = Field(default=10, ge=0, le=500)
    lr: float = Field(default=2e-2, gt=0, le=1.0)  # AdamW moves a scale by about lr per step: gammas start near 1
    batch_size: int = Field(default=64, ge=1, le=4096)
    shrink: bool = True
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)


def slimmable_layers(model: nn.Module, cfg: SlimmingConfig, ctx: StepContext | None = None,
                     graph: ModelGraph | None = None) -> dict[str, Group]:
    """{group name: coupled group} for the selected conv channels / Linear neurons that a BatchNorm normalises and
    that can be removed exactly (from the traced graph); the classifier is never one."""
    graph = graph if graph is not None else graph_for(model, ctx)
    classifier = classifier_name(model, ctx)
    chosen = resolve_targets(model, cfg.targets, cfg.ignore, (nn.Linear,) + CONVS, classifier, False)
    slimmable = {n: g for u in ("channels", "neurons") for n, g in graph.units(u).items()
                 if any(m.kind == "norm" for m in g.members)}
    out = {n: g for n, g in slimmable.items() if any(p in chosen for p in g.producers)
           and not any(p in g.producers for p in resolve_ignored(model, cfg.ignore))}
    if cfg.targets is not None:
        for t in cfg.targets:
            if t.startswith("re:"):
                continue
            g = graph.group_of(t)
            if g is None or g.name not in slimmable:
                why = f" ({g.reason})" if g is not None and g.reason else ""
                raise CompressionError(f"targets: {t!r} has no BatchNorm scale to slim{why}; slimmable: "
                                       f"{', '.join(slimmable) or 'none'}")
    if not out:
        raise CompressionError("targets: network_slimming needs layers followed by BatchNorm (e.g. conv-BN); "
                               "this selection has none")
    return out


def resolve_ignored(model: nn.Module, ignore: list[str]) -> set[str]:
    return {n for n, _ in model.named_modules() if n and any(_matches(n, p) for p in ignore)}


def bn_scale_scores(bn: nn.Module) -> torch.Tensor:
    """(channels,) importance of each channel: |gamma| of its BatchNorm (Liu et al. 2017)."""
    return bn.weight.detach().abs()


def sparsity_train(model: nn.Module, bns: list[str], cfg: SlimmingConfig, ctx: StepContext) -> nn.Module:
    """A copy of ``model`` trained on the train split with ``cross_entropy + penalty * sum |gamma|`` (fine_tune)."""
    used: list[torch.Tensor] = []  # the scale factors the current forward pass used (the training copy's own)
    hooks = [model.get_submodule(b).register_forward_hook(lambda mod, inp, out: used.append(mod.weight)) for b in bns]
    ids = [h.id for h in hooks]

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        l1 = sum(g.abs().sum() for g in used)
        used.clear()
        return F.cross_entropy(logits, y) + cfg.penalty * l1

    try:
        train = ctx.data.train  # type: ignore[attr-defined]
        ft = FineTuneConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=ctx.seed)
        out = fine_tune(model, train.x, train.y, ft, progress=ctx.report, loss_fn=loss_fn)
    finally:
        for h in hooks:
            h.remove()
    for b in bns:  # the trained copy carries copies of the hooks: drop them
        for i in ids:
            out.get_submodule(b)._forward_hooks.pop(i, None)
    return out


def slimming_masks(model: nn.Module, layers: dict[str, Any], amount: float, scope: str) -> dict[str, torch.Tensor]:
    """{group: (units,) 0/1 keep mask}: the ``amount`` of units with the smallest |gamma| (``layers`` maps a name to
    its coupled group, or to the name of its BatchNorm), per group or over all groups together (global: one
    threshold; each group keeps at least its largest-scale unit)."""
    scores = {n: bn_group_scores(g, model) if isinstance(g, Group) else bn_scale_scores(model.get_submodule(g))
              for n, g in layers.items()}
    if scope == "layer":
        out = {}
        for n, s in scores.items():
            chunks = getattr(layers[n], "chunks", 1)  # grouped convs: the same positions in every group
            per = _unit_mask(len(s) // chunks, s.reshape(chunks, -1).mean(0), amount, n, "channel")
            out[n] = per.repeat(chunks)
        return out
    flat = torch.cat(list(scores.values()))  # (all channels,)
    k = mask_count(len(flat), amount)
    keep_all = torch.ones(len(flat))
    if k:
        keep_all[torch.argsort(flat, stable=True)[:k]] = 0
    masks, start = {}, 0
    for n, s in scores.items():
        keep = keep_all[start : start + len(s)].clone()
        start += len(s)
        if keep.sum() == 0:
            keep[int(torch.argmax(s))] = 1
        masks[n] = keep
    return masks


def slim(model: nn.Module, cfg: SlimmingConfig, ctx: StepContext) -> nn.Module:
    """Apply ``cfg`` (the registered handler gets a copy): sparsity training, masking, shrinking."""
    groups = slimmable_layers(model, cfg, ctx)
    if ctx.replay and cfg.scope == "global" and cfg.shrink:
        raise CompressionError("scope: 'global' with shrink takes each layer's channel count from the trained "
                               "scale factors, so it cannot be rebuilt without training; use scope='layer' "
                               "(or shrink=false) for a recipe a bundle can reload")
    if not ctx.replay and cfg.epochs > 0:
        if ctx.data is None or getattr(ctx.data, "train", None) is None:
            raise CompressionError("data: network_slimming trains on the train split; pass a workload with one")
        bns = sorted({m.name for g in groups.values() for m in g.members if m.kind == "norm"})
        model = sparsity_train(model, bns, cfg, ctx)
        groups = slimmable_layers(model, cfg, ctx)  # the trained copy's own modules
    for name, keep in slimming_masks(model, groups, cfg.amount, cfg.scope).items():
        mask_group(model, groups[name], keep)
    if cfg.shrink:
        model = shrink(model, ctx=ctx)
    sizes = []
    for name in groups:
        w = getattr(model.get_submodule(name), "weight", None)
        sizes.append(f"{name} {w.shape[out_dim(model.get_submodule(name))]}" if isinstance(w, torch.Tensor) else name)
    ctx.report(1.0, "slimmed: " + ", ".join(sizes))
    return model.eval()


@register(SlimmingConfig)
def _slimming_step(model: nn.Module, cfg: SlimmingConfig, ctx: StepContext) -> nn.Module:
    return slim(model, cfg, ctx)
