"""Shrink: turn a structured-pruned (masked) model into a physically smaller dense model.

A unit whose output is exactly zero in every layer of its coupled group (a masked channel's conv rows, bias and
BatchNorm scale and shift; a head's q, k, v rows) is removed from every member of the group: the producers' rows,
the BatchNorm channels, a depthwise conv's channels (and its ``groups``), the consumers' input columns (through a
flatten, a concatenation or a residual add). The groups are the traced graph's (``compression_core.graph``, over
Torch-Pruning's DependencyGraph, Fang et al. 2023, "DepGraph"), and Torch-Pruning's own pruning functions do the
slicing; heads are sliced here (projection rows and columns, the attention's head count). The result has no masks,
is plain torch modules, and is checked to give the masked model's outputs on the workload's inputs.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import inputs as I
from ..errors import CompressionError
from ..graph import Group, HeadGroup, ModelGraph, build_graph, example_inputs, out_dim
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ..io import fold_masks
from ..linear_like import convert_to_conv1d, convert_to_linear, weight_oi
from .common import set_submodule


class ShrinkConfig(StepConfig):
    """Physically remove the zeroed neurons, channels and heads left by ``prune_structured``."""

    kind: Literal["shrink"] = "shrink"
    ui = TechniqueUI(family="prune", label="shrink (remove the pruned units)", storage="shrunk", order=90)


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


# ------------------------------------------------------------------------------------- heads
class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` after head pruning: q, k, v project ``embed_dim`` to ``num_heads * head_dim``
    (fewer than ``embed_dim``), which torch's own module cannot express. Same parameter names and call signature,
    so a ``nn.TransformerEncoderLayer`` keeps working (``_qkv_same_embed_dim = False`` sends it down its
    non-fused path); outputs equal the masked module's."""

    def __init__(self, src: nn.MultiheadAttention, keep: torch.Tensor) -> None:
        super().__init__()
        e, h = src.embed_dim, src.num_heads
        d = e // h
        rows = (keep[:, None] * d + torch.arange(d)).reshape(-1)  # (kept*d,)
        rows3 = torch.cat([rows + part * e for part in range(3)])  # q, k, v rows of the kept heads
        self.embed_dim, self.num_heads, self.head_dim = e, len(keep), d
        self.kdim = self.vdim = e
        self.batch_first, self.dropout = src.batch_first, src.dropout
        self._qkv_same_embed_dim = False  # not torch's fused layout any more (embed_dim != heads * head_dim)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        w = src.in_proj_weight.detach()
        self.in_proj_weight = nn.Parameter(w[rows3].clone())  # (3*kept*d, E)
        self.in_proj_bias = None if src.in_proj_bias is None else nn.Parameter(src.in_proj_bias.detach()[rows3].clone())
        self.out_proj = copy.deepcopy(src.out_proj)
        _slice_param(self.out_proj, "weight", 1, rows)
        self.out_proj.in_features = len(rows)
        self.train(src.training)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first or not batched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)  # (B, T, E)
        b, tq, _ = query.shape
        tk = key.shape[1]
        h, d = self.num_heads, self.head_dim
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).reshape(b, tq, h, d).transpose(1, 2)  # (B, H, Tq, d)
        k = F.linear(key, wk, bk).reshape(b, tk, h, d).transpose(1, 2)  # (B, H, Tk, d)
        v = F.linear(value, wv, bv).reshape(b, tk, h, d).transpose(1, 2)  # (B, H, Tk, d)
        mask = torch.zeros(b, 1, tq, tk, dtype=q.dtype)  # additive
        if attn_mask is not None:
            if attn_mask.dim() == 3:
                raise CompressionError("attn_mask: a per-head (3-D) mask does not fit an attention whose heads were "
                                       "pruned; pass a 2-D mask")
            am = attn_mask if attn_mask.dtype != torch.bool else torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(
                attn_mask, float("-inf"))
            mask = mask + am.to(q.dtype)
        elif is_causal:
            mask = mask.masked_fill(torch.ones(tq, tk, dtype=torch.bool).triu(1), float("-inf"))
        if key_padding_mask is not None:
            kp = key_padding_mask
            kp = torch.zeros_like(kp, dtype=q.dtype).masked_fill(kp, float("-inf")) if kp.dtype == torch.bool else kp
            mask = mask + kp.to(q.dtype)[:, None, None, :]
        p = self.dropout if self.training else 0.0
        if need_weights:
            att = torch.softmax(q @ k.transpose(-2, -1) / d ** 0.5 + mask, dim=-1)  # (B, H, Tq, Tk)
            y = F.dropout(att, p, self.training) @ v
        else:
            att = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, Tq, d)
        y = self.out_proj(y.transpose(1, 2).reshape(b, tq, h * d))  # (B, Tq, E)
        if not self.batch_first or not batched:
            y = y.transpose(0, 1)
        if not batched:
            y = y.squeeze(1)
        if att is not None and average_attn_weights:
            att = att.mean(1)
        return y, att


@torch.no_grad()
def _slice_param(module: nn.Module, pname: str, dim: int, keep: torch.Tensor) -> None:
    """Keep only the slices ``keep`` of ``module.<pname>`` along ``dim`` (a new Parameter, in place)."""
    t = getattr(module, pname, None)
    if t is None:
        return
    setattr(module, pname, nn.Parameter(t.detach().index_select(dim, keep).clone(), requires_grad=t.requires_grad))


def _set_head_counts(owner: nn.Module, heads: int, head_dim: int, kept: int) -> None:
    """Lower the attention's own head count (an int attribute equal to the number of heads) and its total width
    (an int attribute equal to heads * head_dim), whatever they are called."""
    for attr, value in list(vars(owner).items()):
        if attr.startswith("_") or isinstance(value, bool) or not isinstance(value, int):
            continue
        if value == heads and (heads != head_dim or "dim" not in attr and "size" not in attr):
            setattr(owner, attr, kept)
        elif value == heads * head_dim and heads * head_dim not in (heads, head_dim):
            setattr(owner, attr, kept * head_dim)


def shrink_heads(model: nn.Module, hg: HeadGroup, keep: torch.Tensor) -> None:
    """Remove every head of ``hg`` not in ``keep`` (in place)."""
    keep = torch.as_tensor(keep, dtype=torch.long)
    if hg.kind == "mha":
        set_submodule(model, hg.name, PrunedMultiheadAttention(model.get_submodule(hg.name), keep))
        return
    for pname, rows in hg.producers.items():
        lin = model.get_submodule(pname)
        r = rows[keep].reshape(-1).sort().values
        _slice_param(lin, "weight", 0, r)
        _slice_param(lin, "bias", 0, r)
        lin.out_features = len(r)
    cons = model.get_submodule(hg.consumer)
    cols = hg.columns[keep].reshape(-1).sort().values
    _slice_param(cons, "weight", 1, cols)
    cons.in_features = len(cols)
    _set_head_counts(model.get_submodule(hg.name) if hg.name else model, hg.size, hg.head_dim, len(keep))


# ------------------------------------------------------------------------------------- what is removable
def _zero_along(t: torch.Tensor | None, dim: int, n: int) -> torch.Tensor:
    """(n,) True where slice i of ``t`` along ``dim`` is all zero (a missing tensor counts as zero)."""
    if t is None:
        return torch.ones(n, dtype=torch.bool)
    return t.detach().movedim(dim, 0).reshape(n, -1).abs().sum(1) == 0


def removable_units(model: nn.Module, group: Group | HeadGroup) -> torch.Tensor:
    """(units,) True where the unit is zero in every layer that produces it (so removing it cannot change the
    model's outputs). ``model`` must have its masks folded."""
    if isinstance(group, HeadGroup):
        gone = torch.ones(group.size, dtype=torch.bool)
        for pname, rows in group.producers.items():
            mod = model.get_submodule(pname)
            w = mod.in_proj_weight if group.kind == "mha" else weight_oi(mod)  # (out, in)
            b = mod.in_proj_bias if group.kind == "mha" else mod.bias
            z = _zero_along(w, 0, w.shape[0]) & _zero_along(b, 0, w.shape[0])
            gone &= z[rows].all(1)
        return gone
    gone = torch.ones(group.size, dtype=torch.bool)
    for m in group.members:
        mod = model.get_submodule(m.name)
        if m.kind in ("out", "depthwise"):
            d = out_dim(mod)
            n = mod.weight.shape[d]
            z = _zero_along(mod.weight, d, n) & _zero_along(getattr(mod, "bias", None), 0, n)
        elif m.kind == "norm":
            z = _zero_along(mod.weight, 0, mod.num_features) & _zero_along(mod.bias, 0, mod.num_features)
        elif m.kind == "embed":
            z = _zero_along(mod.weight, 1, mod.embedding_dim)
        else:
            continue
        gone &= torch.tensor([bool(z[idx].all()) if idx else True for idx in m.idxs])
    return gone


def kept_units(model: nn.Module, graph: ModelGraph) -> dict[str, torch.Tensor]:
    """{group name: indices of the units to keep} for every prunable group (at least one unit is kept)."""
    out = {}
    for unit in ("channels", "neurons", "heads"):
        for name, group in graph.units(unit).items():
            gone = removable_units(model, group)
            chunks = getattr(group, "chunks", 1)
            if chunks > 1:  # grouped convs: only positions removable in every group
                gone = gone.reshape(chunks, -1).all(0).repeat(chunks)
            keep = torch.nonzero(~gone).reshape(-1)
            if chunks > 1 and not len(keep):
                keep = torch.arange(chunks) * (group.size // chunks)  # a zero position is harmless
            out[name] = keep if len(keep) else torch.zeros(1, dtype=torch.long)  # a zero unit is harmless
    return out


def shrink(model: nn.Module, cfg: ShrinkConfig | None = None, ctx: StepContext | None = None) -> nn.Module:
    """Fold every mask, then remove the removable units of each coupled group (in place; returns the model).

    Checked: the shrunk model's outputs on the workload's inputs equal the masked model's (else a one-line error).
    transformers' Conv1D layers are sliced as equivalent nn.Linear layers (Torch-Pruning slices those) and turned
    back into Conv1D of the new sizes."""
    fold_masks(model)
    example = example_inputs(ctx, "data")
    conv1d = convert_to_linear(model)
    try:
        return _shrink(model, example, ctx)
    finally:
        convert_to_conv1d(model, conv1d)


def _shrink(model: nn.Module, example, ctx: StepContext | None) -> nn.Module:
    graph = build_graph(model, example, probe=False)
    keeps = kept_units(model, graph)
    was = model.training
    with torch.no_grad():
        ref = I.call(model.eval(), example)
    done = []
    for unit in ("channels", "neurons"):
        for name, g in graph.units(unit).items():
            keep = keeps[name]
            if len(keep) == g.size:
                continue
            gone = sorted(set(range(g.size)) - set(keep.tolist()))
            root = model.get_submodule(g.root)
            graph.dg.get_pruning_group(root, graph.dg.get_pruner_of_module(root).prune_out_channels, gone).prune()
            done.append(f"{name} {g.size}->{len(keep)}")
    for name, hg in graph.units("heads").items():
        keep = keeps[name]
        if len(keep) < hg.size:
            shrink_heads(model, hg, keep)
            done.append(f"{name} {hg.size}->{len(keep)} heads")
    with torch.no_grad():
        out = I.call(model.eval(), example)
    model.train(was)
    diff = float((out - ref).abs().max()) if out.shape == ref.shape else float("inf")
    if diff > 1e-4 * (1.0 + float(ref.abs().max())):
        raise CompressionError(f"shrink: removing the zeroed units changed the outputs by {diff:.3g} (shapes "
                               f"{tuple(ref.shape)} -> {tuple(out.shape)}); an operation in this model is not "
                               "supported by shrink: leave the layers around it out of prune_structured (ignore)")
    if ctx is not None:
        ctx.report(1.0, "shrunk: " + (", ".join(done) or "nothing to remove"))
    return model


@register(ShrinkConfig)
def _shrink_step(model: nn.Module, cfg: ShrinkConfig, ctx: StepContext) -> nn.Module:
    return shrink(model, cfg, ctx)
