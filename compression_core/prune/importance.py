"""Importance scores, separate from removal: maskers and shrinkers act on what these return.

Magnitude (L1/L2 norms, Han et al. 2015; Li et al. 2017 "Pruning Filters for Efficient ConvNets"), a random
baseline, BatchNorm scale (Liu et al. 2017 "Network Slimming") and accuracy drop when a head or block is
skipped (Michel et al. 2019 "Are Sixteen Heads Really Better than One?").
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..measure import effective_weight  # the one accessor: masks applied, detached
from .common import is_attention


def weight_scores(weight: torch.Tensor, importance: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-weight scores of the same shape: |w| ("l1"/"l2" order the same) or uniform random ("random")."""
    if importance == "random":
        return torch.rand(weight.shape, generator=generator)
    return weight.abs()


def _norm(rows: torch.Tensor, importance: str) -> torch.Tensor:
    """Per-row L1 or L2 norm of a (units, ...) tensor -> (units,)."""
    flat = rows.reshape(rows.shape[0], -1)  # (units, fan_in)
    return flat.abs().sum(1) if importance == "l1" else flat.pow(2).sum(1).sqrt()


def unit_scores(layer: nn.Module, importance: str, bn: nn.Module | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(out_units,) scores of a Linear's neurons or a conv's channels: the norm of each output row/filter, times
    the BatchNorm's effective scale |gamma| / sqrt(var + eps) when one follows (that is the filter's real gain)."""
    w = effective_weight(layer)  # (out, in) or (out, in, kh, kw)
    if importance == "random":
        return torch.rand(w.shape[0], generator=generator)
    scores = _norm(w, importance)
    if bn is not None:
        gamma = effective_weight(bn)
        scores = scores * (gamma.abs() / torch.sqrt(bn.running_var + bn.eps))
    return scores


def head_scores(attn: nn.Module, importance: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_heads,) scores: the norm of each head's q, k, v rows of ``qkv`` and its columns of ``proj``."""
    h, d = attn.n_heads, attn.head_dim
    if importance == "random":
        return torch.rand(h, generator=generator)
    qkv = effective_weight(attn.qkv).reshape(3, h, d, -1).permute(1, 0, 2, 3).reshape(h, -1)  # (H, 3*d*dim)
    proj = effective_weight(attn.proj).reshape(-1, h, d).permute(1, 0, 2).reshape(h, -1)  # (H, dim*d)
    both = torch.cat([qkv, proj], dim=1)  # (H, 3*d*dim + dim*d)
    return _norm(both, importance)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from ..measure import accuracy

    return accuracy(model, x, y)


def head_accuracy_drop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    """Accuracy drop on (x, y) when each head alone is masked: {attention layer name: [drop per head]}."""
    from ..technique import clone_model

    base = _accuracy(model, x, y)
    out: dict[str, list[float]] = {}
    for name, m in model.named_modules():
        if not is_attention(m):
            continue
        drops = []
        for head in range(m.n_heads):
            probe = clone_model(model)
            _zero_head(probe.get_submodule(name), head)
            drops.append(base - _accuracy(probe, x, y))
        out[name] = drops
    return out


@torch.no_grad()
def _zero_head(attn: nn.Module, head: int) -> None:
    """Zero one head's value rows (its output is then exactly zero), in place on a probe copy."""
    h, d = attn.n_heads, attn.head_dim
    rows = slice(2 * h * d + head * d, 2 * h * d + (head + 1) * d)
    for pname in ("weight", "bias"):
        if getattr(attn.qkv, pname, None) is not None:
            stored = getattr(attn.qkv, pname + "_orig", None)
            stored = stored if stored is not None else getattr(attn.qkv, pname)
            stored[rows] = 0


def skip_accuracy_drop(model: nn.Module, blocks: list[str], x: torch.Tensor, y: torch.Tensor,
                       skip: Callable[[nn.Module, str], nn.Module]) -> dict[str, float]:
    """Accuracy drop on (x, y) when each of ``blocks`` is skipped (``skip(copy, name)`` returns the copy without it)."""
    from ..technique import clone_model

    base = _accuracy(model, x, y)
    return {name: base - _accuracy(skip(clone_model(model), name), x, y) for name in blocks}
