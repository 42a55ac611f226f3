"""Network Slimming (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming").

Train with an L1 penalty on the BatchNorm scale factors (``loss = CE + penalty * sum |gamma|``), which drives the
scales of unneeded channels toward zero; then remove the channels with the smallest ``|gamma|`` (per layer or
with one global threshold) and shrink. A channel's BatchNorm scale multiplies its whole normalised output, so a
near-zero gamma marks a channel the network has learned to do without.

Scoring (``bn_scale_scores``) is separate from removal: the masks are the structured-pruning masks of
``prune_structured`` (conv rows, bias and BatchNorm affine parameters zeroed) and ``shrink`` removes them.

Replay (bundles, validate): no training; ``scope="layer"`` removes ``round(amount * channels)`` per layer, so the
shapes are the same as after training. ``scope="global"`` picks each layer's count from the trained scales, which
a replay cannot know: with ``shrink=True`` it refuses to replay (use ``scope="layer"`` for a reloadable recipe).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import CompressionError
from ..targets import resolve_targets
from ..technique import StepConfig, StepContext, register
from ..train import FineTuneConfig, fine_tune
from ..targets import classifier_name
from .common import coupling_plan, mask_count
from .shrink import shrink
from .structured import _mask_rows, _unit_mask


class SlimmingConfig(StepConfig):
    """Sparsity training with ``penalty * sum |gamma|`` for ``epochs``, then remove ``amount`` of the channels
    (neurons) with the smallest BatchNorm scale, per layer or globally, and shrink."""

    kind: Literal["network_slimming"] = "network_slimming"
    amount: float = Field(default=0.5, ge=0, lt=1)
    scope: Literal["layer", "global"] = "layer"
    penalty: float = Field(default=3e-2, ge=0, le=10.0)  # lambda of the L1 term on BatchNorm scales
    epochs: int = Field(default=10, ge=0, le=500)
    lr: float = Field(default=2e-2, gt=0, le=1.0)  # AdamW moves a scale by about lr per step: gammas start near 1
    batch_size: int = Field(default=64, ge=1, le=4096)
    shrink: bool = True
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)


def slimmable_layers(model: nn.Module, cfg: SlimmingConfig, ctx: StepContext | None = None) -> dict[str, str]:
    """{producer layer: its BatchNorm} for the selected Linear/Conv2d layers whose outputs are normalised by a
    BatchNorm and feed a consumer (so removing a channel is well defined); the classifier is never one."""
    chosen = resolve_targets(model, cfg.targets, cfg.ignore, (nn.Linear, nn.Conv2d), classifier_name(model, ctx),
                             False)
    plan = coupling_plan(model)
    out = {n: plan[n].bn for n in chosen if n in plan and plan[n].bn is not None}
    if cfg.targets is not None:
        bad = [t for t in cfg.targets if not t.startswith("re:") and t not in out]
        if bad:
            raise CompressionError(f"targets: {bad[0]!r} has no BatchNorm scale to slim; slimmable: "
                                   f"{', '.join(slimmable_layers(model, SlimmingConfig(), ctx)) or 'none'}")
    if not out:
        raise CompressionError("targets: network_slimming needs layers followed by BatchNorm (e.g. conv-BN); "
                               "this selection has none")
    return out


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


def slimming_masks(model: nn.Module, layers: dict[str, str], amount: float, scope: str) -> dict[str, torch.Tensor]:
    """{layer: (channels,) 0/1 keep mask}: the ``amount`` of channels with the smallest |gamma|, per layer or over
    all layers together (global: one threshold; each layer keeps at least its largest-scale channel)."""
    scores = {n: bn_scale_scores(model.get_submodule(bn)) for n, bn in layers.items()}
    if scope == "layer":
        return {n: _unit_mask(len(s), s, amount, n, "channel") for n, s in scores.items()}
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
    layers = slimmable_layers(model, cfg, ctx)
    if ctx.replay and cfg.scope == "global" and cfg.shrink:
        raise CompressionError("scope: 'global' with shrink takes each layer's channel count from the trained "
                               "scale factors, so it cannot be rebuilt without training; use scope='layer' "
                               "(or shrink=false) for a recipe a bundle can reload")
    if not ctx.replay and cfg.epochs > 0:
        if ctx.data is None or getattr(ctx.data, "train", None) is None:
            raise CompressionError("data: network_slimming trains on the train split; pass the sample model's data")
        model = sparsity_train(model, list(layers.values()), cfg, ctx)
    for name, keep in slimming_masks(model, layers, cfg.amount, cfg.scope).items():
        _mask_rows(model.get_submodule(name), keep)
        _mask_rows(model.get_submodule(layers[name]), keep)
    if cfg.shrink:
        model = shrink(model)
    ctx.report(1.0, "slimmed: " + ", ".join(f"{n} {tuple(model.get_submodule(n).weight.shape)[0]}" for n in layers))
    return model.eval()


@register(SlimmingConfig)
def _slimming_step(model: nn.Module, cfg: SlimmingConfig, ctx: StepContext) -> nn.Module:
    return slim(model, cfg, ctx)
