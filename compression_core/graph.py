"""Coupled groups from the traced graph: the one adapter over Torch-Pruning's ``DependencyGraph``.

Structured pruning, shrink, Network Slimming and layer removal ask this module which dimensions of a model are
coupled (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning"): a conv's output channels together with its
BatchNorm, every layer that adds into the same residual stream, the depthwise conv that reads them (its ``groups``),
the input columns of a Linear after a flatten, the slices of a concatenation, a squeeze-excite gate. Nothing is
found by module names. A group that cannot be removed exactly is kept with its reason (the model output, a
LayerNorm that normalises the features together, a recurrent layer, an op that does not keep zero at zero, ...).

Attention heads are found by tracing too, not by Torch-Pruning (whose default run fails on them): every
``F.scaled_dot_product_attention`` call is intercepted, the Linear rows feeding each head's q, k, v and the input
columns of the Linear reading its output are read off the autograd graph; ``nn.MultiheadAttention`` (whose packed
``in_proj_weight`` has a documented [q | k | v] x heads layout) is handled by type.

>>> g = build_graph(model, example)          # example: a float tensor, token ids or a dict of kwargs
>>> g.units("channels")                     # prunable channel groups; g.refused("channels"): {name: reason}
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
import torch_pruning as tp

from . import inputs as I
from .errors import CompressionError
from .linear_like import conv1d_names, is_conv1d, is_linear_like, linear_copy

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm,)
OTHER_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.RMSNorm)
RECURRENT = (nn.RNNBase,)


# ------------------------------------------------------------------------------------------------ records
@dataclass
class Member:
    """One place a group touches: rows of a producer ("out"), a BatchNorm channel ("norm"), a depthwise conv's
    channel ("depthwise", both in and out), an Embedding column ("embed"), or input columns of a consumer ("in").
    ``idxs[u]``: the indices in this member's dimension that belong to unit ``u`` (several after a flatten)."""

    name: str
    kind: str
    idxs: list[list[int]]


@dataclass
class Group:
    """A set of coupled units (channels of convs, neurons of Linears): removing unit ``u`` removes it from every
    member at once. ``reason`` is None when the group can be pruned and shrunk exactly, else why not."""

    name: str  # the first producer in module order
    unit: str  # "channels" | "neurons"
    size: int
    producers: list[str]
    members: list[Member]
    reason: str | None = None
    root: str = ""  # the producer Torch-Pruning started from (its output channels are the units' order)
    tp_group: Any = field(default=None, repr=False)
    chunks: int = 1  # a grouped conv reads or writes the units group by group: the same positions go in every chunk

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)


@dataclass
class HeadGroup:
    """The heads of one attention: ``producers`` {Linear or MHA: (heads, rows) indices of its output rows per head}
    (q, k and v rows), ``consumer`` the Linear reading the heads' outputs with its (heads, head_dim) input columns."""

    name: str  # the module that runs the attention (owns the head count)
    size: int  # heads
    head_dim: int
    producers: dict[str, torch.Tensor]
    consumer: str
    columns: torch.Tensor  # (heads, head_dim)
    kind: str = "linear"  # "linear" (hand-written / Hugging Face) | "mha" (nn.MultiheadAttention)
    unit: str = "heads"
    reason: str | None = None


@dataclass
class ModelGraph:
    """Every coupled group of a model, traced once on example inputs. ``model`` is the model traced: the model's
    own modules, or, when it has transformers' Conv1D layers (``conv1d``: their names), a copy of it with each
    Conv1D converted to an equivalent nn.Linear (Torch-Pruning has no Conv1D handling); the groups name the same
    layers either way, and acting on them through ``tp_group`` or ``dg`` changes that copy, not the model."""

    model: nn.Module
    groups: dict[str, Group]
    heads: dict[str, HeadGroup]
    dg: Any = field(default=None, repr=False)
    example: Any = field(default=None, repr=False)
    conv1d: frozenset = frozenset()

    def all(self, unit: str) -> dict[str, Group | HeadGroup]:
        if unit == "heads":
            return dict(self.heads)
        return {n: g for n, g in self.groups.items() if g.unit == unit}

    def units(self, unit: str) -> dict[str, Group | HeadGroup]:
        """Groups of ``unit`` that can be pruned, keyed by their name."""
        return {n: g for n, g in self.all(unit).items() if g.reason is None}

    def refused(self, unit: str) -> dict[str, str]:
        """{group name: why it cannot be pruned} for groups of ``unit``."""
        return {n: g.reason for n, g in self.all(unit).items() if g.reason is not None}

    def group_of(self, layer: str, unit: str | None = None) -> Group | HeadGroup | None:
        """The group whose units are ``layer``'s outputs (a producer of it), or the attention named ``layer``."""
        if layer in self.heads and unit in (None, "heads"):
            return self.heads[layer]
        for g in self.groups.values():
            if layer in g.producers and (unit is None or g.unit == unit):
                return g
        return None


# ------------------------------------------------------------------------------------------------ helpers
def example_inputs(ctx: Any, field_name: str = "data", n: int = 4) -> Any:
    """A few inputs of the workload in ``ctx.data`` (calibration split, else test) to trace the model with."""
    wl = getattr(ctx, "data", None) if ctx is not None else None
    for split in ("calib", "test", "train"):
        s = getattr(wl, split, None) if wl is not None else None
        if s is not None and getattr(s, "x", None) is not None and I.n_items(s.x) > 0:
            return I.head(s.x, min(n, I.n_items(s.x)))
    raise CompressionError(f"{field_name}: structured pruning traces the model on example inputs; pass the "
                           "workload (its calib or test split)")


def _name_map(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def out_dim(module: nn.Module) -> int:
    """The dimension of ``weight`` holding a producer's output units (transformers' Conv1D: 1, its weight is
    (in, out))."""
    if is_conv1d(module):
        return 1
    if isinstance(module, CONVS + (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) and module.transposed:
        return 1
    if isinstance(module, nn.Embedding):
        return 1
    return 0


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, CONVS) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def run_hooked(model: nn.Module, example: Any, hooks: list) -> None:
    """One forward pass on ``example`` in eval mode with ``hooks`` registered; the hooks are removed and the model's
    mode restored afterwards, whatever happens."""
    was = model.training
    try:
        I.call(model.eval(), example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)


class _Opaque(torch.autograd.Function):
    """Marks a recurrent layer as one node of the autograd graph (its input -> its output), so the tracer sees the
    layer and not the dozens of gate ops it decomposes into on CPU."""

    @staticmethod
    def forward(ctx, x, y):  # noqa: D401
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return None, None


def _opaque_hook(module, args, out):
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not x.requires_grad:
        return None
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return (_Opaque.apply(x, out[0].detach()),) + tuple(out[1:])
    if isinstance(out, torch.Tensor):
        return _Opaque.apply(x, out.detach())
    return None


def _refusing_pruner():
    class _Refuse(tp.pruner.function.BasePruningFunc):
        """A layer kept whole: a group that reaches it is refused before any pruning function runs."""

        def prune_out_channels(self, layer, idxs):
            raise CompressionError(f"{type(layer).__name__} cannot be pruned here")

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return None

        def get_in_channels(self, layer):
            return None

    return _Refuse()


# ------------------------------------------------------------------------------------------------ tracing
@torch.enable_grad()
def _dependency_graph(model: nn.Module, example: Any):
    """Torch-Pruning's DependencyGraph of ``model`` traced on ``example`` (recurrent layers kept opaque)."""
    args, kwargs = I.example_args(example)
    refuse = _refusing_pruner()
    rnns = [m for m in model.modules() if isinstance(m, RECURRENT)]
    hooks = [m.register_forward_hook(_opaque_hook) for m in rnns]
    inputs = kwargs if kwargs else (args if len(args) > 1 else args[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(
                model, inputs, output_transform=I.as_logits, verbose=False,
                customized_pruners={t: refuse for t in {type(m) for m in rnns}})
    finally:
        for h in hooks:
            h.remove()
    return dg


def _member_kind(module: Any, handler: Any, dg: Any) -> str:
    if isinstance(module, nn.Parameter):
        return "param"
    if _is_depthwise(module):
        return "depthwise"
    if isinstance(module, NORMS):
        return "norm"
    if isinstance(module, CONVS + (nn.Linear,)):
        return "out" if handler == dg.get_pruner_of_module(module).prune_out_channels else "in"
    if isinstance(module, nn.Embedding):
        return "embed"
    if isinstance(module, tp.ops._OutputOp):
        return "output"
    if isinstance(module, (tp.ops._ElementWiseOp, tp.ops._ConcatOp, tp.ops._SplitOp, tp.ops._ReshapeOp,
                           tp.ops._UnbindOp, tp.ops._ExpandOp, tp.ops._SliceOp)):
        return "op"
    if isinstance(module, nn.PReLU):
        return "prelu"
    return "other"


def _group_record(dg: Any, root: nn.Module, names: dict[int, str]) -> tuple[Any, list[Member], list[tuple[str, Any]]]:
    pruner = dg.get_pruner_of_module(root)
    n = pruner.get_out_channels(root)
    with warnings.catch_warnings():  # Torch-Pruning's warnings are not the user's: a refusal stays one line
        warnings.filterwarnings("ignore", module="torch_pruning")
        tp_group = dg.get_pruning_group(root, pruner.prune_out_channels, list(range(n)))
    members: dict[tuple[str, str], list[list[int]]] = {}
    odd: list[tuple[str, Any]] = []
    for item in tp_group:
        mod = item.dep.target.module
        kind = _member_kind(mod, item.dep.handler, dg)
        if kind == "op":
            continue
        if isinstance(mod, nn.Parameter):
            name = dg._param_to_name.get(mod, "parameter")
        else:
            name = names.get(id(mod), type(mod).__name__)
        if kind in ("output", "other", "param", "prelu"):
            odd.append((kind, mod if kind != "param" else name))
            if kind in ("output", "other", "param"):
                continue
        per_unit = members.setdefault((name, kind), [[] for _ in range(n)])
        for idx, root_idx in zip(item.idxs, item.root_idxs):
            if idx not in per_unit[root_idx]:
                per_unit[root_idx].append(int(idx))
    return tp_group, [Member(nm, k, v) for (nm, k), v in members.items()], odd


def _reason(model: nn.Module, members: list[Member], odd: list[tuple[str, Any]], names: dict[int, str],
            head_linears: dict[str, str]) -> str | None:
    for kind, obj in odd:
        if kind == "output":
            return "its outputs are the model's output"
    others = [(names.get(id(obj), ""), obj) for kind, obj in odd if kind == "other"]
    for m in members + [Member(n, "other", []) for n, _ in others if n]:
        mod = model.get_submodule(m.name)
        if isinstance(mod, OTHER_NORMS):
            return (f"{type(mod).__name__} {m.name!r} normalises them together with the other features (a "
                    "zeroed feature still changes its mean and variance)")
    for m in members + [Member(n, "other", []) for n, _ in others if n]:
        mod = model.get_submodule(m.name)
        if m.name in head_linears and head_linears[m.name][1] == m.kind:
            return f"they are attention heads of {head_linears[m.name][0]!r} (prune those with unit='heads')"
        if isinstance(mod, nn.MultiheadAttention):
            return (f"they are the embedding dimension of MultiheadAttention {m.name!r} (prune its heads with "
                    "unit='heads')")
        if isinstance(mod, RECURRENT):
            return (f"they feed {type(mod).__name__} {m.name!r}, whose gates interleave its units: recurrent "
                    "layers are not pruned")
        if isinstance(mod, NORMS) and not mod.affine:
            return f"BatchNorm {m.name!r} has no affine scale and shift to zero"
        if isinstance(mod, CONVS) and mod.groups > 1 and not _is_depthwise(mod):
            n = len(m.idxs)
            if any(idx != [u] for u, idx in enumerate(m.idxs)) or n % mod.groups or n // mod.groups < 2:
                return (f"grouped conv {m.name!r} (groups={mod.groups}) reads or writes them in groups of "
                        f"{n // mod.groups if n % mod.groups == 0 else 'unequal size'} that cannot stay equal")
        if isinstance(mod, CONVS) and mod.transposed:
            return f"transposed conv {m.name!r} is not supported"
    for kind, obj in odd:
        if kind == "param":
            return f"the parameter {obj!r} scales them and is not sliced here"
        if kind == "other":
            return f"{type(obj).__name__} {names.get(id(obj), '')!r} is not supported by the pruner"
    return None


def _channel_groups(model: nn.Module, dg: Any, head_linears: dict[str, str]) -> dict[str, Group]:
    names = _name_map(model)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    groups: dict[str, Group] = {}
    seen: set[str] = set()
    for name, mod in model.named_modules():
        if not isinstance(mod, CONVS + (nn.Linear,)) or name in seen:
            continue
        unit = "channels" if isinstance(mod, CONVS) else "neurons"
        if mod not in dg.module2node:
            continue  # not used by the forward pass
        if _is_depthwise(mod):
            continue  # a depthwise conv belongs to the group of the channels it reads
        try:
            tp_group, members, odd = _group_record(dg, mod, names)
        except CompressionError:
            raise
        except Exception as e:  # Torch-Pruning could not follow the coupling
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:160]
            groups[name] = Group(name, unit, mod.weight.shape[out_dim(mod)], [name], [], root=name,
                                 reason=f"Torch-Pruning could not follow them ({msg})")
            seen.add(name)
            continue
        producers = sorted({m.name for m in members if m.kind in ("out", "depthwise")}, key=order.get)
        producers = [p for p in producers if not _is_depthwise(model.get_submodule(p))] or producers
        seen.update(p for p in producers)
        size = len(tp_group[0].root_idxs) if len(tp_group) else 0
        reason = _reason(model, members, odd, names, head_linears)
        gname = producers[0] if producers else name
        chunks = 1
        for m in members:
            conv = model.get_submodule(m.name)
            if isinstance(conv, CONVS) and conv.groups > 1 and not _is_depthwise(conv):
                chunks = math.lcm(chunks, conv.groups)
        if reason is None and (size % chunks or size // chunks < 2):
            reason = f"grouped convs split them into {chunks} groups of one channel"
        groups[gname] = Group(gname, unit, size, producers, members, reason, root=name, tp_group=tp_group,
                              chunks=chunks)
    return groups


@torch.no_grad()
def _output_producers(model: nn.Module, example: Any) -> set[str]:
    """Layers whose output tensor is the model's output itself."""
    names = _name_map(model)
    seen: dict[int, str] = {}

    def hook(mod, args, out):
        if isinstance(out, torch.Tensor):
            seen[id(out)] = names[id(mod)]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, CONVS + (nn.Linear,))]
    try:
        out = I.call(model.eval(), example)
        return {seen[id(out)]} if id(out) in seen else set()
    finally:
        for h in hooks:
            h.remove()


# ------------------------------------------------------------------------------------------- zero probing
@torch.no_grad()
def _probe_zero_paths(model: nn.Module, groups: dict[str, Group], example: Any) -> None:
    """Zero every other unit of every candidate group (through output hooks, the weights are untouched) and check
    that each consumer really receives zeros there; a group whose zeros do not arrive as zeros is refused."""
    cand = {n: g for n, g in groups.items() if g.reason is None}
    if not cand:
        return
    zero_at: dict[str, tuple[int, torch.Tensor]] = {}  # producer module -> (dim, keep mask)
    check_at: dict[str, list[tuple[str, int, list[int]]]] = {}  # consumer -> [(group, dim, idxs)]
    for gname, g in cand.items():
        gone = list(range(0, g.size, 2))
        for m in g.members:
            mod = model.get_submodule(m.name)
            idxs = sorted({i for u in gone for i in m.idxs[u]})
            if m.kind in ("out", "depthwise", "norm"):
                dim = -1 if is_linear_like(mod) else 1
                n = mod.weight.shape[out_dim(mod)] if m.kind != "norm" else mod.num_features
                keep = zero_at.get(m.name, (dim, torch.ones(n)))[1]  # a BatchNorm after a concat: several groups
                keep[idxs] = 0
                zero_at[m.name] = (dim, keep)
            elif m.kind == "embed":
                keep = zero_at.get(m.name, (-1, torch.ones(mod.embedding_dim)))[1]
                keep[idxs] = 0
                zero_at[m.name] = (-1, keep)
            elif m.kind == "in":
                dim = -1 if is_linear_like(mod) else 1
                check_at.setdefault(m.name, []).append((gname, dim, idxs))

    def zero_hook(name):
        dim, keep = zero_at[name]

        def hook(mod, args, out):
            if not isinstance(out, torch.Tensor):
                return None
            shape = [1] * out.dim()
            shape[dim] = -1
            return out * keep.to(out.dtype).reshape(shape)
        return hook

    bad: dict[str, str] = {}

    def check_hook(name):
        def hook(mod, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                return
            for gname, dim, idxs in check_at[name]:
                if gname in bad or not idxs:
                    continue
                if x.index_select(dim, torch.as_tensor(idxs)).abs().max() > 0:
                    bad[gname] = (f"zeroed, they reach {name!r} as non-zero values (an operation between them does "
                                  "not keep 0 at 0, e.g. Sigmoid, or an input outside the group adds to them)")
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(zero_hook(n)) for n in zero_at]
    hooks += [model.get_submodule(n).register_forward_pre_hook(check_hook(n)) for n in check_at]
    run_hooked(model, example, hooks)
    for gname, why in bad.items():
        groups[gname].reason = why


# ------------------------------------------------------------------------------------------------- heads
class _SDPAWatch(TorchFunctionMode):
    """Records every ``scaled_dot_product_attention`` call (q, k, v, output) and the module stack running it."""

    def __init__(self, stack: list[nn.Module]):
        super().__init__()
        self.stack = stack
        self.calls: list[dict] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")][len(args):])[:3]
            self.calls.append({"q": q, "k": k, "v": v, "out": out, "stack": list(self.stack)})
        return out


def _rows_per_head(t: torch.Tensor, outs: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """{Linear: [rows of its output feeding head h of ``t`` (B, H, T, d)] per head}, from the autograd graph."""
    names = list(outs)
    found: dict[str, list[torch.Tensor]] = {}
    heads = t.shape[1]
    for h in range(heads):
        grads = torch.autograd.grad(t[:, h].sum(), [outs[n] for n in names], retain_graph=True, allow_unused=True)
        for n, g in zip(names, grads):
            if g is None:
                continue
            rows = torch.nonzero(g.reshape(-1, g.shape[-1]).abs().sum(0)).reshape(-1)
            if len(rows):
                found.setdefault(n, [torch.empty(0, dtype=torch.long)] * heads)[h] = rows
    return found


def _columns_per_head(y: torch.Tensor, ins: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor] | None:
    """The Linear whose input columns are a permutation of the heads' outputs ``y`` (B, H, T, d), with its
    (H, d) column indices: the gradient of sum(input * (column + 1)) with respect to ``y`` names each column."""
    b, heads, t, d = y.shape
    for name, x in ins.items():
        if not x.requires_grad:
            continue
        code = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
        (g,) = torch.autograd.grad((x * code).sum(), [y], retain_graph=True, allow_unused=True)
        if g is None or not g.abs().sum():
            continue
        cols = g[0, :, 0, :]  # (H, d) the column each head element lands in (+1)
        same = torch.equal(g, cols[None, :, None, :].expand_as(g))
        flat = cols.reshape(-1)
        if not same or torch.any(flat != flat.round()) or torch.any(flat < 1) or len(set(flat.tolist())) != heads * d \
                or x.shape[-1] != heads * d:
            return None
        return name, (cols - 1).long()
    return None


@torch.enable_grad()
def _attention_heads(model: nn.Module, example: Any) -> dict[str, HeadGroup]:
    """Heads of every ``nn.MultiheadAttention`` and of every attention computed with
    ``F.scaled_dot_product_attention`` on q, k, v projected by Linear layers."""
    names = _name_map(model)
    heads: dict[str, HeadGroup] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            h, e = m.num_heads, m.embed_dim
            d = e // h
            reason = None
            if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
                reason = "only MultiheadAttention with equal q, k, v dims and no bias_k/add_zero_attn is supported"
            per_head = (torch.arange(h)[:, None] * d + torch.arange(d)).reshape(h, d)  # (H, d)
            rows = torch.cat([per_head + part * e for part in range(3)], dim=1)  # (H, 3d) q, k, v rows
            heads[name] = HeadGroup(name, h, d, {name: rows}, f"{name}.out_proj", per_head, kind="mha",
                                    reason=reason)
    stack: list[nn.Module] = []
    lin_out: dict[str, tuple[int, torch.Tensor]] = {}
    lin_in: dict[str, tuple[int, torch.Tensor]] = {}
    counter = [0]
    mha = tuple(m for m in model.modules() if isinstance(m, nn.MultiheadAttention))

    def pre(mod, args):
        stack.append(mod)
        if isinstance(mod, nn.Linear) and args and isinstance(args[0], torch.Tensor):
            counter[0] += 1
            lin_in[names[id(mod)]] = (counter[0], args[0])

    def post(mod, args, out):
        stack.pop()
        if isinstance(mod, nn.Linear) and isinstance(out, torch.Tensor):
            counter[0] += 1
            lin_out[names[id(mod)]] = (counter[0], out)

    hooks = [m.register_forward_pre_hook(pre) for m in model.modules()]
    hooks += [m.register_forward_hook(post) for m in model.modules()]
    watch = _SDPAWatch(stack)
    was = model.training
    try:
        with watch:
            counter[0] = 0
            out = I.call(model.eval(), example)
        del out
        for call in watch.calls:
            owner = call["stack"][-1] if call["stack"] else model
            if any(any(o is x for x in call["stack"]) for o in mha):
                continue  # nn.MultiheadAttention: handled by type above
            q, k, v, y = call["q"], call["k"], call["v"], call["out"]
            oname = names.get(id(owner), "")
            if not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (q, k, v, y)):
                continue
            if not q.requires_grad:
                continue
            h, d = q.shape[1], q.shape[-1]
            inside = {n: t for n, (_, t) in lin_out.items() if n.startswith(oname + ".") or not oname}
            rows: dict[str, list[torch.Tensor]] = {}
            ok = k.shape[1] == h and v.shape[1] == h
            for t in (q, k, v):
                for lname, per in _rows_per_head(t, inside).items():
                    old = rows.setdefault(lname, [torch.empty(0, dtype=torch.long)] * h)
                    rows[lname] = [torch.cat([a, b]).unique() for a, b in zip(old, per)]
            if not rows:
                continue
            # the consumer: a later Linear whose input columns are exactly the heads' outputs
            after = {n: t for n, (i, t) in sorted(lin_in.items(), key=lambda kv: kv[1][0])}
            cons = _columns_per_head(y, after) if ok else None
            reason = None
            sizes = {len(r) for per in rows.values() for r in per}
            if not ok:
                reason = "k and v have fewer heads than q (grouped-query attention) and are not pruned here"
            elif cons is None:
                reason = "no Linear layer reads the heads' outputs as plain columns"
            elif len(sizes) != 1 or 0 in sizes:
                reason = "the heads do not own equal, disjoint rows of their projections"
            else:
                allrows = [torch.cat(per) for per in rows.values()]
                if any(len(a.unique()) != len(a) for a in allrows):
                    reason = "the heads share rows of their projections"
            producers = {n: torch.stack(per) if reason is None else torch.zeros(h, 0, dtype=torch.long)
                         for n, per in rows.items()}
            cname, cols = cons if cons is not None else ("", torch.zeros(h, d, dtype=torch.long))
            heads[oname] = HeadGroup(oname, h, d, producers, cname, cols, reason=reason)
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was)
    return heads


# ---------------------------------------------------------------------------------------------- entry point
_CACHE_LOCK = threading.RLock()


@contextlib.contextmanager
def _kv_cache_off(model: nn.Module):
    """A Hugging Face model's key/value cache switched off while it is traced (``config.use_cache``, put back
    after). GPT2Config's default ``use_cache=True`` makes the forward ``torch.cat`` an empty past onto every layer's
    keys and values; that concatenation has no producing layer, which Torch-Pruning's bookkeeping cannot follow
    (``TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'``). The layers and how they are coupled
    are the same with the cache off. The lock keeps two traces of one model from restoring each other's flag."""
    with _CACHE_LOCK:
        configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
                   and getattr(c, "use_cache", None) is True}
        for c in configs.values():
            c.use_cache = False
        try:
            yield
        finally:
            for c in configs.values():
                c.use_cache = True


def attention_heads(model: nn.Module, example: Any) -> dict[str, HeadGroup]:
    """The attention heads of ``model`` found by running it once on ``example`` (``F.scaled_dot_product_attention``
    calls and ``nn.MultiheadAttention``; GPT-2's Conv1D projections read as nn.Linear), without Torch-Pruning's
    whole-graph trace: what ``build_graph(...).heads`` holds, for a caller that needs the heads only (Advise's
    model type). The model is left in the mode it was in."""
    if conv1d_names(model):
        model = linear_copy(model)
    was = model.training
    try:
        with _kv_cache_off(model):
            return _attention_heads(model, example)
    finally:
        model.train(was)


def build_graph(model: nn.Module, example: Any, probe: bool = True) -> ModelGraph:
    """Trace ``model`` on ``example`` (a batch of its inputs) and return its coupled groups and attention heads.

    The model is traced in eval mode and left in the mode it was in; its weights are not changed. A model with
    transformers' Conv1D layers is traced as a copy with each converted to an equivalent nn.Linear
    (``ModelGraph.model``, ``ModelGraph.conv1d``).
    """
    conv1d = frozenset(conv1d_names(model))
    if conv1d:
        graph = build_graph(linear_copy(model), example, probe)
        graph.conv1d = conv1d
        return graph
    with _kv_cache_off(model):
        return _build_graph(model, example, probe)


def _build_graph(model: nn.Module, example: Any, probe: bool) -> ModelGraph:
    was = model.training
    try:
        heads = _attention_heads(model, example)
        head_linears: dict[str, tuple[str, str]] = {}  # Linear -> (attention, the role its heads play there)
        for hg in heads.values():
            for p in hg.producers:
                head_linears[p] = (hg.name, "out")
            if hg.consumer:
                head_linears[hg.consumer] = (hg.name, "in")
        try:
            dg = _dependency_graph(model, example)
        except CompressionError:
            raise
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:200]
            raise CompressionError(f"model: tracing its graph with Torch-Pruning failed ({msg})") from None
        groups = _channel_groups(model, dg, head_linears)
        final = _output_producers(model, example)
        for g in groups.values():
            if g.reason is None and final & set(g.producers):
                g.reason = "its outputs are the model's output"
        if probe:
            _probe_zero_paths(model, groups, example)
    finally:
        model.train(was)
    return ModelGraph(model, groups, heads, dg, example)


__all__ = ["Group", "HeadGroup", "Member", "ModelGraph", "attention_heads", "build_graph", "example_inputs",
           "out_dim"]
