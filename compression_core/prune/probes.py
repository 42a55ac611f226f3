"""Accuracy-drop probes: how much accuracy a model loses when one attention head is masked or one block is skipped
(Michel et al. 2019, "Are Sixteen Heads Really Better than One?"; Fan et al. 2020, "Reducing Transformer Depth on
Demand with Structured Dropout"). Sensitivity and layer pruning rank heads and blocks by these."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import inputs as I
from ..graph import build_graph
from ..measure import accuracy
from ..technique import clone_model
from .structured import mask_heads


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return accuracy(model, x, y)


def head_accuracy_drop(model: nn.Module, x, y: torch.Tensor) -> dict[str, list[float]]:
    """Accuracy drop on (x, y) when each head alone is masked: {attention: [drop per head]}, for every attention the
    traced graph finds (hand-written, Hugging Face, nn.MultiheadAttention)."""
    heads = build_graph(model, I.head(x, 4), probe=False).units("heads")
    base = _accuracy(model, x, y) if heads else 0.0
    out: dict[str, list[float]] = {}
    for name, hg in heads.items():
        drops = []
        for head in range(hg.size):
            probe = clone_model(model)
            keep = torch.ones(hg.size)
            keep[head] = 0
            mask_heads(probe, hg, keep)
            drops.append(base - _accuracy(probe, x, y))
        out[name] = drops
    return out


def skip_accuracy_drop(model: nn.Module, blocks: list[str], x: torch.Tensor, y: torch.Tensor,
                       skip: Callable[[nn.Module, str], nn.Module]) -> dict[str, float]:
    """Accuracy drop on (x, y) when each of ``blocks`` is skipped (``skip(copy, name)`` returns the copy without it)."""
    base = _accuracy(model, x, y)
    return {name: base - _accuracy(skip(clone_model(model), name), x, y) for name in blocks}


__all__ = ["head_accuracy_drop", "skip_accuracy_drop"]
