"""Shrink: turn a structured-pruned (masked) model into a physically smaller dense model.

A unit whose output is exactly zero (a masked neuron, a conv channel whose BatchNorm scale and shift are zero, a
head whose value rows or output-projection columns are zero) is removed everywhere its dimension is coupled: the
producer's output rows, its BatchNorm channel, and the consumer's input columns (through nn.Flatten: channel c is
columns c*H*W .. (c+1)*H*W-1); for heads the q, k, v rows of ``qkv``, the columns of ``proj`` and ``n_heads``.
The dependency-graph idea is Torch-Pruning's (Fang et al. 2023, "DepGraph"); the graph here is the small hand-made
``coupling_plan`` of our Sequential models and the ViT. The result has no masks, is plain torch modules, and gives
the masked model's outputs (up to float summation order).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from ..technique import StepConfig, StepContext, register
from .common import Group, coupling_plan, fold_masks, set_submodule


class ShrinkConfig(StepConfig):
    """Physically remove the zeroed neurons, channels and heads left by ``prune_structured``."""

    kind: Literal["shrink"] = "shrink"


# ------------------------------------------------------------------------------------- layer functions
def _idx(keep) -> torch.Tensor:
    return torch.as_tensor(keep, dtype=torch.long)


@torch.no_grad()
def slice_linear_out(layer: nn.Linear, keep) -> nn.Linear:
    """A new Linear with only the output rows ``keep`` (masks folded in)."""
    keep = _idx(keep)
    w = layer.weight.detach()  # (out, in)
    new = nn.Linear(w.shape[1], len(keep), bias=layer.bias is not None, dtype=w.dtype)
    new.weight.copy_(w[keep])  # (kept, in)
    if layer.bias is not None:
        new.bias.copy_(layer.bias.detach()[keep])
    return new.train(layer.training)


@torch.no_grad()
def slice_linear_in(layer: nn.Linear, keep) -> nn.Linear:
    """A new Linear reading only the input columns ``keep`` (masks folded in)."""
    keep = _idx(keep)
    w = layer.weight.detach()  # (out, in)
    new = nn.Linear(len(keep), w.shape[0], bias=layer.bias is not None, dtype=w.dtype)
    new.weight.copy_(w[:, keep])  # (out, kept)
    if layer.bias is not None:
        new.bias.copy_(layer.bias.detach())
    return new.train(layer.training)


def _conv_like(conv: nn.Conv2d, cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation, 1, conv.bias is not None,
                     conv.padding_mode, dtype=conv.weight.dtype)


@torch.no_grad()
def slice_conv_out(conv: nn.Conv2d, keep) -> nn.Conv2d:
    """A new Conv2d (groups=1) with only the output channels ``keep``."""
    keep = _idx(keep)
    w = conv.weight.detach()  # (out, in, kh, kw)
    new = _conv_like(conv, w.shape[1], len(keep))
    new.weight.copy_(w[keep])
    if conv.bias is not None:
        new.bias.copy_(conv.bias.detach()[keep])
    return new.train(conv.training)


@torch.no_grad()
def slice_conv_in(conv: nn.Conv2d, keep) -> nn.Conv2d:
    """A new Conv2d (groups=1) reading only the input channels ``keep``."""
    keep = _idx(keep)
    w = conv.weight.detach()  # (out, in, kh, kw)
    new = _conv_like(conv, len(keep), w.shape[0])
    new.weight.copy_(w[:, keep])
    if conv.bias is not None:
        new.bias.copy_(conv.bias.detach())
    return new.train(conv.training)


@torch.no_grad()
def slice_bn(bn: nn.modules.batchnorm._BatchNorm, keep) -> nn.modules.batchnorm._BatchNorm:
    """A new BatchNorm of the same type over only the channels ``keep`` (affine parameters and running stats)."""
    keep = _idx(keep)
    new = type(bn)(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight.copy_(bn.weight.detach()[keep])
        new.bias.copy_(bn.bias.detach()[keep])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


def head_rows(n_heads: int, head_dim: int, keep) -> torch.Tensor:
    """Rows of ``qkv`` (laid out [q heads | k heads | v heads]) belonging to the heads ``keep``."""
    keep = _idx(keep)
    per_head = (keep[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)  # (kept*d,)
    return torch.cat([part * n_heads * head_dim + per_head for part in range(3)])  # (3*kept*d,)


@torch.no_grad()
def slice_heads(attn: nn.Module, keep) -> nn.Module:
    """A copy of an attention module with only the heads ``keep``: qkv rows, proj columns and ``n_heads``."""
    keep = _idx(keep)
    new = copy.deepcopy(attn)
    new.qkv = slice_linear_out(attn.qkv, head_rows(attn.n_heads, attn.head_dim, keep))
    cols = (keep[:, None] * attn.head_dim + torch.arange(attn.head_dim)).reshape(-1)  # (kept*d,)
    new.proj = slice_linear_in(attn.proj, cols)
    new.n_heads = len(keep)
    return new


# ------------------------------------------------------------------------------------- what is removable
def _zero_rows(t: torch.Tensor | None, n: int) -> torch.Tensor:
    """(n,) True where row i of ``t`` is all zero (a missing tensor counts as zero)."""
    if t is None:
        return torch.ones(n, dtype=torch.bool)
    return t.detach().reshape(n, -1).abs().sum(1) == 0


def removable_units(model: nn.Module, group: Group) -> torch.Tensor:
    """(units,) True where the unit's output is exactly zero, so removing it cannot change the model's outputs.
    ``model`` must have its masks folded."""
    prod = model.get_submodule(group.producer)
    if group.unit == "heads":
        h, d = prod.n_heads, prod.head_dim
        v = slice(2 * h * d, 3 * h * d)
        v_zero = _zero_rows(prod.qkv.weight[v], h) & _zero_rows(None if prod.qkv.bias is None else prod.qkv.bias[v], h)
        proj_zero = _zero_rows(prod.proj.weight.detach().t().reshape(h, -1), h)  # (H,) columns of each head
        return v_zero | proj_zero
    n = prod.weight.shape[0]
    if group.bn is not None:
        bn = model.get_submodule(group.bn)
        if not bn.affine:
            return torch.zeros(n, dtype=torch.bool)
        return (bn.weight.detach() == 0) & (bn.bias.detach() == 0)
    return _zero_rows(prod.weight, n) & _zero_rows(prod.bias, n)


def kept_units(model: nn.Module) -> dict[str, torch.Tensor]:
    """{producer name: indices of the units to keep} for every coupled group (at least one unit is kept)."""
    out = {}
    for name, group in coupling_plan(model).items():
        gone = removable_units(model, group)
        keep = torch.nonzero(~gone).reshape(-1)
        out[name] = keep if len(keep) else torch.zeros(1, dtype=torch.long)  # a zero unit is harmless
    return out


def shrink(model: nn.Module, cfg: ShrinkConfig | None = None, ctx: StepContext | None = None) -> nn.Module:
    """Fold every mask, then remove the removable units of each coupled group (in place; returns the model)."""
    fold_masks(model)
    plan = coupling_plan(model)
    keeps = kept_units(model)
    out_keep: dict[str, torch.Tensor] = {}
    in_keep: dict[str, torch.Tensor] = {}
    for name, group in plan.items():
        keep = keeps[name]
        prod = model.get_submodule(name)
        n = prod.n_heads if group.unit == "heads" else prod.weight.shape[0]
        if len(keep) == n:
            continue
        if group.unit == "heads":
            set_submodule(model, name, slice_heads(prod, keep))
            continue
        out_keep[name] = keep
        if group.bn:
            set_submodule(model, group.bn, slice_bn(model.get_submodule(group.bn), keep))
        cols = keep
        if group.flatten:
            spatial = model.get_submodule(group.consumer).in_features // n  # H*W after pooling
            cols = (keep[:, None] * spatial + torch.arange(spatial)).reshape(-1)  # (kept*H*W,)
        in_keep[group.consumer] = cols
    for name in list(out_keep) + [n for n in in_keep if n not in out_keep]:
        layer = model.get_submodule(name)
        is_conv = isinstance(layer, nn.Conv2d)
        if name in out_keep:
            layer = (slice_conv_out if is_conv else slice_linear_out)(layer, out_keep[name])
        if name in in_keep:
            layer = (slice_conv_in if is_conv else slice_linear_in)(layer, in_keep[name])
        set_submodule(model, name, layer)
    if ctx is not None:
        ctx.report(1.0, "shrunk: " + (", ".join(f"{n} {len(k)}" for n, k in keeps.items()) or "nothing to remove"))
    return model


@register(ShrinkConfig)
def _shrink_step(model: nn.Module, cfg: ShrinkConfig, ctx: StepContext) -> nn.Module:
    return shrink(model, cfg, ctx)
