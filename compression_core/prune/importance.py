"""Importance scores, separate from removal: maskers and shrinkers act on what these return.

Magnitude (L1/L2 norms, Han et al. 2015; Li et al. 2017 "Pruning Filters for Efficient ConvNets"), a random
baseline and BatchNorm scale (Liu et al. 2017 "Network Slimming"). Accuracy drops when a head or block is left out
are measured in ``probes``.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from ..linear_like import weight_oi
from ..measure import effective_weight  # the one accessor: masks applied, detached


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
    w = weight_oi(layer, w) if w.dim() == 2 else w  # a Conv1D's (in, out) weight as (out, in)
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


def group_scores(group, importance: str, generator: torch.Generator | None = None,
                 model: nn.Module | None = None) -> torch.Tensor:
    """(units,) importance of each unit of a coupled group (``compression_core.graph.Group``), scored over every
    layer it touches: Torch-Pruning's group magnitude (``GroupMagnitudeImportance``, the L1 or L2 norm of the unit's
    rows and columns in every member, averaged over members), BatchNorm scale (mean |gamma| over the group's
    BatchNorms, Liu et al. 2017) or a seeded random baseline."""
    if importance == "random":
        return torch.rand(group.size, generator=generator)
    if importance == "bn_scale":
        return bn_group_scores(group, model)
    imp = tp.importance.GroupMagnitudeImportance(p=1 if importance == "l1" else 2, group_reduction="mean",
                                                 normalizer=None)
    with torch.no_grad():
        scores = imp(group.tp_group)
    return scores.detach().float().reshape(-1)


def bn_group_scores(group, model: nn.Module | None = None) -> torch.Tensor:
    """(units,) mean |gamma| of the BatchNorms normalising each unit of ``group`` (Network Slimming's criterion)."""
    norms = [m for m in group.members if m.kind == "norm"]
    if not norms:
        raise ValueError(f"group {group.name!r} has no BatchNorm")
    dg_model = group.tp_group._DG.model if model is None else model  # the model the group was traced on
    total = torch.zeros(group.size)
    for m in norms:
        gamma = effective_weight(dg_model.get_submodule(m.name)).abs()
        total += torch.stack([gamma[idx].mean() for idx in m.idxs])
    return total / len(norms)


def head_group_scores(model: nn.Module, heads, importance: str, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
    """(heads,) scores of the heads of an attention (``compression_core.graph.HeadGroup``): the norm of each head's
    q, k, v rows in its projections and its input columns of the output projection."""
    h = heads.size
    if importance == "random":
        return torch.rand(h, generator=generator)
    parts = []
    for pname, rows in heads.producers.items():
        mod = model.get_submodule(pname)
        w = (mod.in_proj_weight if heads.kind == "mha" else weight_oi(mod, effective_weight(mod))).detach()  # (out, in)
        parts.append(w[rows.reshape(-1)].reshape(h, -1))  # (H, rows*in)
    cmod = model.get_submodule(heads.consumer)
    cons = weight_oi(cmod, effective_weight(cmod))  # (out, H*d)
    parts.append(cons[:, heads.columns.reshape(-1)].reshape(cons.shape[0], h, -1).permute(1, 0, 2).reshape(h, -1))
    return _norm(torch.cat(parts, dim=1), importance)

