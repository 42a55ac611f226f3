"""What each technique does to the artefact's layout (``compression_core.cost``), from shapes and settings.

Each planner mirrors its technique's handler: the same layer selection (the library's own functions, so the same
one-line refusals), the same per-layer settings, and the state_dict the technique's modules save (keys, shapes,
dtypes, module versions), without applying it. Zero counts, where a number depends on them, are arithmetic on the
weights (torch.nn.utils.prune's own mask functions, the quantizers' own observers and rounding), done only when
asked for. Magnitude pruning of a model's own weights reads its threshold from the weights' sorted magnitudes (kept
per model), so a slider move costs lookups, not a topk per weight; a tie at the threshold falls back to the mask
function. A planner raises ``NotEstimated`` for what cannot be known before running (a trained model's zeros, blocks
chosen by a measured accuracy drop).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .cost_layout import Entry, Layout, Unknowable
from .errors import CompressionError
from .prune.magnitude_cut import CutL1Unstructured, shared_sorted
from .graph import out_dim
from .prune.common import check_overrides, mask_count
from .targets import classifier_name
from .prune.unstructured import select_layers
from .prune.importance import group_scores, head_group_scores
from .prune.structured import _unit_mask, select_groups
from .prune.layers import why_not_removable
from .prune.lowrank import Factorized, build_factors, plans

try:
    from .linear_like import is_conv1d, tied_partners
except ImportError:  # a library without transformers' Conv1D or tied-weight handling
    def is_conv1d(module: nn.Module) -> bool:
        return False

    def tied_partners(model: nn.Module) -> dict[str, list[str]]:
        return {}


def in_dim(module: nn.Module) -> int:
    """The dimension of ``weight`` holding a consumer's input units (a Conv1D's weight is (in, out))."""
    return 1 - out_dim(module) if getattr(module, "weight", None) is not None and module.weight.dim() == 2 else 1


class NotEstimated(Unknowable):
    """The configuration's numbers cannot be computed before running it (the message says why)."""


class Plan:
    """The artefact being planned: its layout, plus what the FLOP count and the refusals need to know."""

    def __init__(self, info, layout: Layout) -> None:
        self.info, self.model, self.wl = info, info.model, info.wl
        self.base = info.base
        self.layout = layout.copy()
        self.phantoms: OrderedDict[str, Entry] = OrderedDict()  # counted by layer_stats but not stored as tensors
        self.simulated: set[str] = set()
        self.reshaped = self.renamed = False
        self.swapped: dict[str, str] = {}  # layer -> the technique that replaced its module
        self.head_ratio: dict[str, tuple[int, int]] = {}  # attention -> (heads kept, heads)
        self.removed: list[str] = []  # blocks removed (base names)
        self.dense_flops: set[str] = set()  # layers measure counts as dense (torch.ao dynamic LSTM/GRU)
        self.static = None  # the replayed int8 graph's facts when a static/QAT step ran
        self.masked_keys: set[str] = set()  # parameters under a torch.nn.utils.prune mask
        self.flops_unknown: str | None = None
        self.linearized: set[str] = set()  # Conv1D layers made nn.Linear (their FLOP formula reads the transpose)
        self.flop_weight: dict[str, Entry] = {}  # a layer computing with another layer's stored weight (tied int8)
        self.why_unknown = "which weights are zero is known only after applying"  # set by the step that hides them
        self.factorized: dict[str, list[tuple[str, bool]]] = {}  # layer -> its factors' weights (at input resolution)
        self.cuts: dict[str, tuple[Entry, Entry, Any]] = {}  # key -> (entry put, base entry, cut()): |base| > cut()

    def entry(self, key: str) -> Entry:
        return self.layout.entries[key]

    def put(self, key: str, e: Entry) -> None:
        self.layout.entries[key] = e

    def splice(self, old: list[str], new: OrderedDict) -> None:
        """Replace the keys ``old`` by ``new`` at the position of the first of them."""
        out, done = OrderedDict(), False
        for k, v in self.layout.entries.items():
            if k in old:
                if not done:
                    out.update(new)
                    done = True
                continue
            out[k] = v
        if not done:
            out.update(new)
        self.layout.entries = out

    def need(self, what: str, names: list[str] = (), reshape: bool = True) -> None:
        """Refuse (NotEstimated) a step the estimate cannot follow: after blocks were removed (layer names moved),
        after a shape change when it needs the traced graph, or on layers another step already replaced."""
        if self.renamed:
            raise NotEstimated(f"{what} after prune_layers is not estimated (the layer names moved)")
        if reshape and self.reshaped:
            raise NotEstimated(f"{what} after shrink is not estimated (its traced graph is the unshrunk model's)")
        for n in names:
            if n in self.swapped:
                raise NotEstimated(f"{what} on {n!r} after {self.swapped[n]} is not estimated")

    def reparametrize(self, key: str) -> None:
        """torch.nn.utils.prune's first mask on a parameter re-registers it (as ``<name>_orig``) after the module's
        other parameters: its key moves there (the order of records and pickle memo entries in the file)."""
        if key in self.masked_keys:
            return
        self.masked_keys.add(key)
        mod = key.rpartition(".")[0]
        own = [k for k in self.layout.entries if k.rpartition(".")[0] == mod]
        params = [k for k in own if k != key and isinstance(self.layout.entries[k], Entry) and
                  self.layout.entries[k].pcount]
        order = params + [key] + [k for k in own if k != key and k not in params]
        self.splice(own, OrderedDict((k, self.layout.entries[k]) for k in order))

    def untouched(self, keys) -> bool:
        return all(self.layout.entries.get(k) is self.base.entries.get(k) for k in keys)


def _values(e: Entry, fn):
    """A values function derived from ``e``'s (None when ``e``'s values are unknown)."""
    return None if e.values is None else (lambda v=e.values: fn(v()))


def derive(e: Entry, tag, fn, **kw) -> Entry:
    """``e`` with values ``fn(e's values)``; its zero counts are cached under e's key + ``tag`` (None: not cached,
    the values depend on more than ``e``'s)."""
    ckey = None if tag is None or e.ckey is None else e.ckey + (tag,)
    return e.changed(values=_values(e, fn), ckey=ckey, **kw)


# ------------------------------------------------------------------------------------------------ pruning
def _default_mask(e: Entry, v: torch.Tensor) -> torch.Tensor:
    """torch.nn.utils.prune's current mask of a weight: ones, or its non-zeros when every zero is masked."""
    if e.masked == 0:
        return torch.ones_like(v)
    if e.masked_count() != e.stored_zeros():
        raise NotEstimated("pruning a layer whose mask and zeros differ is not estimated")
    return (v != 0).to(v.dtype)


def sorted_magnitudes(info, e: Entry) -> np.ndarray | None:
    """``|values|`` of a base-model weight, sorted ascending (float32, cached per model: one sort per weight, then
    any pruning amount's threshold and zero count is a lookup); None for a derived tensor, another dtype or NaN.
    The array is a view of the tensor magnitude pruning's masks reuse (``magnitude_cut.shared_sorted``): one copy
    per process for both."""
    if not sorted_magnitudes_kept(info, e):
        return None

    def build():
        a = e.values().detach().cpu().abs().reshape(-1).contiguous()
        s = shared_sorted(a, torch.sort(a).values).numpy()
        return None if s.size and np.isnan(s[-1]) else s

    return info.cached(("sorted_magnitudes",) + e.ckey, build)


SORTED_MAX_PARAMS = 128_000_000  # a bigger model keeps no sorted magnitudes (4 bytes per weight; BERT-base's: 340 MB)


def sorted_magnitudes_kept(info, e: Entry) -> bool:
    """Whether ``sorted_magnitudes`` gives ``e``'s: a float32 base weight with known values, in a model of at most
    ``SORTED_MAX_PARAMS`` parameters."""
    return info is not None and e.values is not None and e.ckey is not None and len(e.ckey) == 1 and \
        e.dtype == torch.float32 and info.cached("param_total", lambda: sum(
            t.numel() for t in info.model.parameters())) <= SORTED_MAX_PARAMS


def kth_cut(s: np.ndarray, k: int) -> float | None:
    """The k-th smallest of the sorted ``s`` (1 <= k <= len) when exactly k values are <= it, i.e. ``|w| > cut``
    keeps the set torch.nn.utils.prune's topk prunes whatever order it breaks ties in; None on a tie at the cut."""
    if k < s.size and not s[k] > s[k - 1]:
        return None
    return float(s[k - 1])


def global_cut(ss: list[np.ndarray], k: int) -> tuple[float, list[int]] | None:
    """``kth_cut`` of the union of the sorted non-negative float32 arrays ``ss`` without concatenating them (a
    binary search on the float32 bit patterns, monotone for non-negative values), with how many values of each
    array are <= it; None on a tie at the cut."""
    def count(bits: int) -> int:
        x = np.array(bits, dtype=np.int32).view(np.float32)
        return sum(int(np.searchsorted(s, x, side="right")) for s in ss)

    lo, hi = 0, max(int(np.array(s[-1], dtype=np.float32).view(np.int32)) for s in ss if s.size)
    while lo < hi:  # the smallest bit pattern with at least k values <= it: the k-th smallest value
        mid = (lo + hi) // 2
        if count(mid) >= k:
            hi = mid
        else:
            lo = mid + 1
    x = np.array(lo, dtype=np.int32).view(np.float32)
    each = [int(np.searchsorted(s, x, side="right")) for s in ss]
    return (float(x), each) if sum(each) == k else None


class _UnstructuredMasks:
    """The masks ``prune_unstructured`` computes, by torch.nn.utils.prune's own methods on the weights (computed
    when first asked; random and global masks all at once, in the handler's order, with its seed). An l1 mask of an
    unmasked weight is the threshold ``|w| > cut`` when no tie straddles the cut (the set topk picks), the cut read
    from the weight's sorted magnitudes (``sorted_magnitudes``, kept per model) when it is a base weight."""

    def __init__(self, olds: dict[str, Entry], per_layer: list[str], together: list[str], cfg, seed: int,
                 info=None) -> None:
        self.olds, self.per_layer, self.together, self.cfg, self.seed = olds, per_layer, together, cfg, seed
        self.info = info
        self.masks: dict[str, torch.Tensor] = {}
        self._global: tuple[float, list[int]] | None | bool = False  # not yet looked for

    def method(self, amount: float):
        cls = CutL1Unstructured if self.cfg.importance == "l1" else torch_prune.RandomUnstructured
        return cls(amount=amount)

    def one(self, name: str) -> torch.Tensor:
        e = self.olds[name]
        v = e.values()
        amount = self.cfg.overrides.get(name, self.cfg.amount)
        if self.cfg.importance == "l1" and e.masked == 0:  # fast path: a threshold, when no tie makes it ambiguous
            k = mask_count(v.numel(), amount)
            if k == 0:
                return torch.ones_like(v)
            a = v.abs()
            s = sorted_magnitudes(self.info, e)
            if s is not None:
                cut = kth_cut(s, k)
                if cut is not None:
                    return (a > cut).to(v.dtype)
            else:
                cut = a.reshape(-1).kthvalue(k).values
                mask = a > cut
                if int(mask.sum()) == v.numel() - k:  # exactly the k smallest: the set topk picks
                    return mask.to(v.dtype)
        return _container_mask(self.method(amount), v, _default_mask(e, v))

    def cut(self, name: str) -> float | None:
        """The threshold of ``name``'s l1 mask (the mask is ``|w| > cut``) when it is known without a tie, from the
        sorted magnitudes of a base weight; else None."""
        e = self.olds[name]
        if self.cfg.importance != "l1" or e.masked != 0:
            return None
        if name in self.per_layer:
            k = mask_count(e.numel, self.cfg.overrides.get(name, self.cfg.amount))
            s = sorted_magnitudes(self.info, e)
            return kth_cut(s, k) if s is not None and k > 0 else None
        g = self.global_counts()
        return None if g is None else g[0]

    def global_counts(self) -> tuple[float, list[int]] | None:
        """(cut, masked count of each ``together`` weight) of an l1 global mask over unmasked base weights with no
        tie at the cut: the mask is ``|w| > cut`` on each; None otherwise (the mask is then computed)."""
        if self._global is False:
            self._global = None
            if self.cfg.importance == "l1" and self.together and all(self.olds[n].masked == 0 for n in self.together):
                ss = [sorted_magnitudes(self.info, self.olds[n]) for n in self.together]
                total = sum(s.size for s in ss if s is not None)
                k = mask_count(total, self.cfg.amount)
                if all(s is not None for s in ss) and 0 < k <= total:
                    self._global = global_cut(ss, k)
        return self._global

    def values(self, name: str) -> torch.Tensor:
        if name not in self.masks:
            if self.cfg.importance == "l1" and name in self.per_layer:
                self.masks[name] = self.one(name)
            elif name in self.together and self.global_counts() is not None:
                v = self.olds[name].values()
                self.masks[name] = (v.abs() > self.global_counts()[0]).to(v.dtype)
            else:
                self.all()
        return self.olds[name].values() * self.masks[name]

    def all(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for name in self.per_layer:
                self.masks[name] = self.one(name)
            if self.together:
                vs = [self.olds[n].values() for n in self.together]
                t = torch.cat([v.reshape(-1) for v in vs])
                dm = torch.cat([_default_mask(self.olds[n], v).reshape(-1) for n, v in zip(self.together, vs)])
                mask = _container_mask(self.method(self.cfg.amount), t, dm)
                for n, part in zip(self.together, mask.split([v.numel() for v in vs])):
                    self.masks[n] = part.reshape(vs[self.together.index(n)].shape)


def _container_mask(method, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
    """torch.nn.utils.prune's PruningContainer: ``method`` on the entries not yet masked."""
    container = torch_prune.PruningContainer()
    container._tensor_name = method._tensor_name = "w"
    container.add_pruning_method(method)
    return container.compute_mask(t, default_mask)


def prune_unstructured(p: Plan, cfg, ctx) -> None:

    chosen = select_layers(p.model, cfg, ctx)
    check_overrides(cfg.overrides, chosen)
    p.need("prune_unstructured", chosen, reshape=False)
    per_layer = chosen if cfg.scope == "layer" else [n for n in chosen if n in cfg.overrides]
    together = [n for n in chosen if n not in per_layer]
    olds = {n: p.entry(n + ".weight") for n in chosen}
    masks = _UnstructuredMasks(olds, per_layer, together, cfg, ctx.seed, p.info)
    glob = masks.global_counts() if together else None
    for n, e in olds.items():
        zeros = masked = None
        if n in per_layer and e.masked is not None:
            k = mask_count(e.numel - e.masked, cfg.overrides.get(n, cfg.amount))
            z0 = e.stored_zeros()
            masked = e.masked + k
            if cfg.importance == "l1" and z0 is not None:
                zeros = max(masked, z0)  # the k smallest go first; zeros are the smallest
            elif z0 == e.masked:
                zeros = masked
        tag = ("l1", cfg.overrides.get(n, cfg.amount)) if cfg.importance == "l1" and n in per_layer else None
        if glob is not None and n in together:  # the global mask is |w| > cut on each weight: counts known
            zeros = masked = glob[1][together.index(n)]
            tag = ("l1>", glob[0])
        new = e.changed(values=None if e.values is None else (lambda n=n: masks.values(n)),
                        ckey=None if tag is None or e.ckey is None else e.ckey + (tag,), zeros=zeros, masked=masked)
        p.put(n + ".weight", new)
        if cfg.importance == "l1" and e.masked == 0 and sorted_magnitudes_kept(p.info, e):
            p.cuts[n + ".weight"] = (new, e, lambda n=n: masks.cut(n))
        p.reparametrize(n + ".weight")


def prune_threshold(p: Plan, cfg, ctx) -> None:

    chosen = select_layers(p.model, cfg, ctx)
    check_overrides(cfg.overrides, chosen, hi=float("inf"))
    p.need("prune_threshold", chosen, reshape=False)
    for n in chosen:
        e = p.entry(n + ".weight")

        def cut(v, n=n):
            t = cfg.overrides.get(n, cfg.threshold)
            if cfg.scale == "std" and n not in cfg.overrides:
                t = t * float(v.std())
            return v * (v.abs() >= t).to(v.dtype)

        p.put(n + ".weight", derive(e, ("threshold", cfg.overrides.get(n, cfg.threshold), cfg.scale), cut,
                                    masked=None))
        p.reparametrize(n + ".weight")


def _zero_slices(p: Plan, key: str, dim: int, gone: list[int]) -> None:
    e = p.layout.entries.get(key)
    if e is None or not gone:
        return
    idx = torch.as_tensor(sorted(gone), dtype=torch.long)
    zeroed = None if e.zeroed is None else e.zeroed + ((dim, frozenset(gone)),)
    p.put(key, derive(e, ("zero", dim, tuple(sorted(gone))), lambda v: v.index_fill(dim, idx, 0), masked=None,
                      zeroed=zeroed))
    p.reparametrize(key)


def prune_structured(p: Plan, cfg, ctx) -> None:

    p.need("prune_structured")
    graph = p.info.graph(probe=True)
    selected, chosen = select_groups(p.model, graph, cfg.unit, cfg.targets, cfg.ignore,
                                     classifier_name(p.model, ctx), cfg.include_classifier)
    check_overrides(cfg.overrides, chosen)
    gen = torch.Generator().manual_seed(ctx.seed)
    what = {"channels": "channel", "neurons": "neuron", "heads": "head"}[cfg.unit]
    masks = {}
    for name, g in selected.items():
        prods = [name] if cfg.unit == "heads" else g.producers
        amount = next((cfg.overrides[q] for q in prods if q in cfg.overrides), cfg.amount)
        mods = list(g.producers) + [g.consumer] if cfg.unit == "heads" else [m.name for m in g.members]
        own = [k for k in p.layout.entries if k.rpartition(".")[0] in mods]
        if cfg.importance != "random" and not p.untouched(own):
            raise NotEstimated("prune_structured after another step changed the weights it scores is not estimated")
        if cfg.unit == "heads":
            if cfg.importance == "bn_scale":
                raise CompressionError("importance: 'bn_scale' scores BatchNorm channels; heads take l1, l2 or random")
            scores = head_group_scores(p.model, g, cfg.importance, gen) if cfg.importance == "random" else \
                p.info.cached(("scores", name, cfg.importance), lambda: head_group_scores(p.model, g, cfg.importance))
        else:
            if cfg.importance == "bn_scale" and not any(m.kind == "norm" for m in g.members):
                raise CompressionError(f"importance: 'bn_scale' needs a BatchNorm after {name!r}; use l1, l2 or "
                                       f"random, or ignore {name!r}")
            scores = group_scores(g, cfg.importance, gen, p.model) if cfg.importance == "random" else \
                p.info.cached(("scores", name, cfg.importance), lambda: group_scores(g, cfg.importance, None, p.model))
        if getattr(g, "chunks", 1) > 1:
            masks[name] = _unit_mask(g.size // g.chunks, scores.reshape(g.chunks, -1).mean(0), amount, name,
                                     what).repeat(g.chunks)
            continue
        masks[name] = _unit_mask(g.size, scores, amount, name, what)
    for name, keep in masks.items():
        g = selected[name]
        units = torch.nonzero(keep == 0).reshape(-1).tolist()
        if cfg.unit == "heads":
            for pname, rows in g.producers.items():
                r = rows[units].reshape(-1).tolist() if units else []
                w, b = ("in_proj_weight", "in_proj_bias") if g.kind == "mha" else ("weight", "bias")
                _zero_slices(p, f"{pname}.{w}", 0 if g.kind == "mha" else out_dim(p.model.get_submodule(pname)), r)
                _zero_slices(p, f"{pname}.{b}", 0, r)
            _zero_slices(p, f"{g.consumer}.weight", in_dim(p.model.get_submodule(g.consumer)),
                         g.columns[units].reshape(-1).tolist() if units else [])
            continue
        for m in g.members:
            gone = sorted({i for u in units for i in m.idxs[u]})
            mod = p.model.get_submodule(m.name)
            if m.kind in ("out", "depthwise"):
                _zero_slices(p, f"{m.name}.weight", out_dim(mod), gone)
                _zero_slices(p, f"{m.name}.bias", 0, gone)
            elif m.kind == "norm":
                _zero_slices(p, f"{m.name}.weight", 0, gone)
                _zero_slices(p, f"{m.name}.bias", 0, gone)
            elif m.kind == "embed":
                _zero_slices(p, f"{m.name}.weight", 1, gone)


def _zero_units(p: Plan, key: str, dim: int, n: int) -> torch.Tensor:
    """(n,) True where slice i of the tensor ``key`` along ``dim`` is all zero (a missing tensor counts as zero)."""
    e = p.layout.entries.get(key)
    if e is None:
        return torch.ones(n, dtype=torch.bool)
    if e.zeroed is not None and all(d == dim for d, _ in e.zeroed):  # the base's zero slices and the masked ones
        z = p.info.cached(("zero_units", key, dim), lambda: _scan(p.base.entries[key], dim, n)).clone()
        for _, idx in e.zeroed:
            z[sorted(idx)] = True
        return z
    return _scan(e, dim, n)


def _scan(e: Entry, dim: int, n: int) -> torch.Tensor:
    if e.values is None:
        raise NotEstimated("shrink after training is not estimated (which units are zero is known after it)")
    return e.values().movedim(dim, 0).reshape(n, -1).abs().sum(1) == 0


def _all_of(z: torch.Tensor, idxs: list[list[int]]) -> torch.Tensor:
    """(units,) whether ``z`` is True at every index of each unit (a unit with no index: True)."""
    lens = {len(i) for i in idxs}
    if len(lens) == 1 and 0 not in lens:
        return z[torch.tensor(idxs, dtype=torch.long)].all(1)
    return torch.tensor([bool(z[i].all()) if i else True for i in idxs])


def _removable(p: Plan, g) -> torch.Tensor:
    """``prune.shrink.removable_units`` over the planned tensors."""
    gone = torch.ones(g.size, dtype=torch.bool)
    if g.unit == "heads":
        for pname, rows in g.producers.items():
            w, b = (("in_proj_weight", "in_proj_bias") if g.kind == "mha" else ("weight", "bias"))
            d = 0 if g.kind == "mha" else out_dim(p.model.get_submodule(pname))
            n = p.entry(f"{pname}.{w}").shape[d]
            gone &= (_zero_units(p, f"{pname}.{w}", d, n) & _zero_units(p, f"{pname}.{b}", 0, n))[rows].all(1)
        return gone
    for m in g.members:
        mod = p.model.get_submodule(m.name)
        if m.kind in ("out", "depthwise"):
            d = out_dim(mod)
            n = p.entry(f"{m.name}.weight").shape[d]
            z = _zero_units(p, f"{m.name}.weight", d, n) & _zero_units(p, f"{m.name}.bias", 0, n)
        elif m.kind == "norm":
            n = mod.num_features
            z = _zero_units(p, f"{m.name}.weight", 0, n) & _zero_units(p, f"{m.name}.bias", 0, n)
        elif m.kind == "embed":
            z = _zero_units(p, f"{m.name}.weight", 1, mod.embedding_dim)
        else:
            continue
        gone &= _all_of(z, m.idxs)
    return gone


def _member_slices(p: Plan, m) -> list[tuple[str, int]]:
    """(tensor key, dimension) that a group member loses a unit's indices from, as Torch-Pruning slices them."""
    mod = p.model.get_submodule(m.name)
    if m.kind in ("out", "depthwise"):
        return [(f"{m.name}.weight", out_dim(mod)), (f"{m.name}.bias", 0)]
    if m.kind == "norm":
        return [(f"{m.name}.{k}", 0) for k in ("weight", "bias", "running_mean", "running_var")]
    if m.kind == "embed":
        return [(f"{m.name}.weight", 1)]
    if m.kind == "in":
        return [(f"{m.name}.weight", in_dim(mod))]
    if m.kind == "prelu" and mod.num_parameters > 1:
        return [(f"{m.name}.weight", 0)]
    return []


def shrink(p: Plan, cfg, ctx) -> None:
    p.need("shrink")
    graph = p.info.graph(probe=False)
    cut: dict[tuple[str, int], set[int]] = {}
    for unit in ("channels", "neurons", "heads"):
        for name, g in graph.units(unit).items():
            gone = _removable(p, g)
            chunks = getattr(g, "chunks", 1)
            if chunks > 1:
                gone = gone.reshape(chunks, -1).all(0).repeat(chunks)
            keep = torch.nonzero(~gone).reshape(-1)
            if chunks > 1 and not len(keep):
                keep = torch.arange(chunks) * (g.size // chunks)
            keep = keep if len(keep) else torch.zeros(1, dtype=torch.long)
            if len(keep) == g.size:
                continue
            units = sorted(set(range(g.size)) - set(keep.tolist()))
            if unit == "heads":
                p.head_ratio[name] = (len(keep), g.size)
                if g.kind == "mha":  # PrunedMultiheadAttention runs (and is counted) on another path than torch's
                    p.flops_unknown = "heads removed from an nn.MultiheadAttention: its FLOPs are counted on " \
                        "another code path (torch's fused path no longer applies): measured after applying"
                for pname, rows in g.producers.items():
                    w, b = ("in_proj_weight", "in_proj_bias") if g.kind == "mha" else ("weight", "bias")
                    d = 0 if g.kind == "mha" else out_dim(p.model.get_submodule(pname))
                    cut.setdefault((f"{pname}.{w}", d), set()).update(rows[units].reshape(-1).tolist())
                    cut.setdefault((f"{pname}.{b}", 0), set()).update(rows[units].reshape(-1).tolist())
                cons = p.model.get_submodule(g.consumer)
                cut.setdefault((f"{g.consumer}.weight", in_dim(cons)), set()).update(
                    g.columns[units].reshape(-1).tolist())
                continue
            for m in g.members:
                idxs = {i for u in units for i in m.idxs[u]}
                for key, dim in _member_slices(p, m):
                    if key in p.layout.entries:
                        cut.setdefault((key, dim), set()).update(idxs)
    by_key: dict[str, list[tuple[int, set[int]]]] = {}
    for (key, dim), idxs in cut.items():
        by_key.setdefault(key, []).append((dim, idxs))
    for key, dims in by_key.items():
        e = p.entry(key)
        shape = list(e.shape)
        keeps = []
        for dim, idxs in dims:
            kept = torch.as_tensor([i for i in range(e.shape[dim]) if i not in idxs], dtype=torch.long)
            shape[dim] = len(kept)
            keeps.append((dim, kept))

        def sliced(v, keeps=keeps):
            for dim, kept in keeps:
                v = v.index_select(dim, kept)
            return v

        cut_on = dict(dims)
        base = p.base.entries.get(key)
        clean = e.zeroed is not None and base is not None and all(idx <= cut_on.get(d, set()) for d, idx in e.zeroed) \
            and base.stored_zeros() == 0  # every zero it had is cut away
        p.put(key, derive(e, ("slice",) + tuple((d, tuple(k.tolist())) for d, k in keeps), sliced, shape=shape,
                          pcount=int(torch.Size(shape).numel()) if e.pcount else 0, masked=None,
                          zeros=0 if clean else None, zeroed=() if clean else None))
    p.reshaped = True


def prune_layers(p: Plan, cfg, ctx) -> None:
    if cfg.names is None:
        raise NotEstimated("prune_layers with count picks the blocks by a measured accuracy drop")
    p.need("prune_layers")
    blocks = p.info.removable_blocks()
    for n in cfg.names:
        if n not in blocks:

            why = why_not_removable(p.model, p.info.example(2), n)
            raise CompressionError(f"names: {n!r} is not a removable block ({why}); removable: {', '.join(blocks)}")
    chosen = list(dict.fromkeys(cfg.names))
    lists: dict[str, int] = {}
    for c in chosen:
        parent = c.rpartition(".")[0]
        if isinstance(p.model.get_submodule(parent) if parent else p.model, nn.ModuleList):
            lists[parent] = lists.get(parent, 0) + 1
    for parent, k in lists.items():
        if k >= len(p.model.get_submodule(parent)):
            raise CompressionError(f"names: cannot remove every block of {parent!r} ({', '.join(blocks)}); keep at "
                                   "least one")
    chosen = [c for c in chosen if not any(c.startswith(o + ".") for o in chosen if o != c)]
    order = sorted(chosen, key=lambda b: [(0, int(q), "") if q.isdigit() else (1, 0, q) for q in b.split(".")])
    for name in reversed(order):
        _remove_block(p, name)
    p.removed += chosen
    p.renamed = True


def _remove_block(p: Plan, name: str) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = p.model.get_submodule(parent_name) if parent_name else p.model
    under = (lambda k: k == name or k.startswith(name + "."))

    def renumber(k: str) -> str:
        pre = parent_name + "." if parent_name else ""
        rest = k[len(pre):]
        head, dot, tail = rest.partition(".")
        if k.startswith(pre) and head.isdigit() and int(head) > int(child):
            return f"{pre}{int(head) - 1}{dot}{tail}"
        return k

    lay = p.layout
    lay.entries = OrderedDict((k, v) for k, v in lay.entries.items() if not under(k))
    if isinstance(parent, nn.ModuleList):
        lay.entries = OrderedDict((renumber(k), v) for k, v in lay.entries.items())
        lay.metadata = OrderedDict((renumber(k), v) for k, v in lay.metadata.items() if not under(k))
    elif isinstance(parent, nn.Sequential):
        lay.metadata = OrderedDict((k, v) for k, v in lay.metadata.items() if not under(k))
    else:  # replaced by nn.Identity
        lay.metadata = OrderedDict((k, {"version": nn.Identity._version} if k == name else v)
                                   for k, v in lay.metadata.items() if k == name or not under(k))


# ------------------------------------------------------------------------------------------------ low rank
def lowrank(p: Plan, cfg, ctx) -> None:
    """Each planned layer becomes a ``Factorized`` of plain Linear/Conv2d factors (the library's own ``plans``:
    ranks by ratio, parameter budget or energy, the last from the singular values of the weights)."""

    p.need("lowrank")
    layer_plans, _ = plans(p.model, cfg, ctx)
    for lp in layer_plans:
        name, mod = lp.name, p.model.get_submodule(lp.name)
        p.need("lowrank", [name])
        w, b = p.entry(f"{name}.weight"), p.layout.entries.get(f"{name}.bias")
        if cfg.criterion == "energy" and not p.untouched([f"{name}.weight"]):
            raise NotEstimated("lowrank by energy after another step changed the weights is not estimated")
        if isinstance(mod, nn.Conv2d):
            c_out, c_in, kh, kw = w.shape
            if lp.method == "tucker2":
                r_in, r_out = lp.ranks
                shapes = [(r_in, c_in, 1, 1), (r_out, r_in, kh, kw), (c_out, r_out, 1, 1)]
            else:
                shapes = [(lp.ranks[0], c_in, kh, kw), (c_out, lp.ranks[0], 1, 1)]
        else:
            out_f, in_f = w.shape[::-1] if is_conv1d(mod) else w.shape
            shapes = [(lp.ranks[0], in_f), (out_f, lp.ranks[0])]
        memo: dict = {}

        def factors(memo=memo, mod=mod, lp=lp, w=w, b=b):  # the library's SVD / HOSVD on the planned weights
            if "f" not in memo:
                m = copy.deepcopy(mod)
                with torch.no_grad():
                    m.weight.copy_(w.values())
                    if b is not None:
                        m.bias.copy_(b.values())
                memo["f"] = build_factors(m, lp).state_dict()
            return memo["f"]

        known = w.values is not None and (b is None or b.values is not None)
        new = OrderedDict()
        for i, shape in enumerate(shapes):
            key = f"{name}.{i}"
            new[f"{key}.weight"] = Entry(shape, w.dtype, layer=key, pcount=int(torch.Size(shape).numel()),
                                         role="weight",
                                         values=(lambda k=f"{i}.weight", f=factors: f()[k]) if known else None)
        if b is not None:
            new[f"{name}.{len(shapes) - 1}.bias"] = b.changed(layer=f"{name}.{len(shapes) - 1}", values=b.values,
                                                                 zeros=b.zeros, pid=None)
        p.splice([k for k in p.layout.entries if k.rpartition(".")[0] == name], new)
        kinds = [nn.Conv2d if isinstance(mod, nn.Conv2d) else nn.Linear] * len(shapes)
        meta = OrderedDict()
        for k, v in p.layout.metadata.items():
            meta[k] = {"version": Factorized._version} if k == name else v
            if k == name:
                meta.update((f"{name}.{i}", {"version": kind._version}) for i, kind in enumerate(kinds))
        p.layout.metadata = meta
        p.factorized[name] = [(f"{name}.{i}.weight", isinstance(mod, nn.Conv2d) and lp.method == "tucker2" and i == 0)
                              for i in range(len(shapes))]
        p.swapped[name] = "lowrank"
        if isinstance(p.model.get_submodule(name.rpartition(".")[0]) if "." in name else p.model,
                      nn.TransformerEncoderLayer):
            p.flops_unknown = "lowrank in an nn.TransformerEncoderLayer turns its fused path off: its FLOPs are " \
                "counted on another code path, measured after applying"


# ------------------------------------------------------------------------------------------- training
def trains(p: Plan, cfg, ctx) -> None:
    """Same structure, new values: sizes stay exact, zero counts become unknown."""
    if getattr(cfg, "kind", "") in ("network_slimming", "fit_budget"):
        raise NotEstimated(f"{cfg.kind}'s result depends on training or measuring")
    p.why_unknown = f"{cfg.kind} trains: which weights are zero is known after training"
    for k, e in list(p.layout.items()):
        if "#" not in k and (e.dtype.is_floating_point or e.qscheme):
            p.put(k, e.changed(values=None, pvalues=None, masked=None, tensor=e.tensor, share=e.share))


__all__ = ["NotEstimated", "Plan", "derive", "in_dim", "is_conv1d", "lowrank", "prune_layers", "prune_structured",
           "prune_threshold", "prune_unstructured", "shrink", "tied_partners", "trains"]
