"""Compressed layers kept per (layer, technique, setting), so a move rebuilds a variant of a model by swapping the
layers it changed into a working copy instead of copying the whole model and compressing every layer again.

``LayerCache(base)`` belongs to one baseline model (only read, never changed). ``apply_recipe(..., layers=cache)``
runs each step of the recipe through ``LayerCache.run``: a step whose technique declares itself per-layer
(``StepConfig.per_layer``: each layer's result depends only on that layer and its own setting) is built on a
working copy of the model's module tree that shares every tensor of the layers it does not change, with each
changed layer taken from the cache or, the first time, compressed alone (that layer copied, the technique's own
handler run on it) and kept. A layer's key is its name and the chain of per-layer settings of every step that
changed it so far, so "pruned 60 % then 4-bit" and "pruned 70 % then 4-bit" are different layers. A step that
depends on more than one layer (``per_layer`` is None: calibration, global thresholds, coupled channels,
reconstruction) runs as ``apply_step`` does, on a copy of the whole model, and so does every step after it.

What a move costs then: a layer-choice move or a bit-width move after pruning finds the unchanged layers in the
cache; a sparsity move compresses each selected layer again but copies only those layers, not the model (a
MiniLM's embedding table alone is half its weights). The result equals ``apply_recipe`` without the cache, tensor
for tensor (tests/test_layer_cache.py).

Sharing: the cached layers are never changed (each variant gets its own module objects over the cached tensors,
and every consumer of a result works on a copy, as it already had to: results are shared between sessions), so two
sessions that chose the same setting of a layer read the same tensors and no session ever sees another's layers.
Memory: the tensors the cached layers own, at most ``max_bytes`` per cache (``budget``: three times the model's
own bytes, at least ``MAX_BYTES``, 512 MiB: a configuration's layers, each kept pruned (its mask and masked weight)
and then rounded, fit), least
recently used first out; a layer larger than that is not kept. A compressed layer's tensor equal to its input
layer's (a pruned layer's original weight: the baseline's) is that tensor, not a copy, and a tensor of the
baseline costs the cache nothing. A configuration larger than the cache does not wash it out: a layer kept by the
recipe being applied is not evicted for another layer of the same recipe (the next move then finds the layers that
fitted, instead of none: least-recently-used order would evict each layer just before the next move asks for it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import nn

from .incremental import LAYER_KEY, private_copy
from .technique import StepConfig, StepContext, apply_step

MAX_BYTES = 512 * 2**20


def budget(model: nn.Module) -> int:
    """The cache's byte bound for variants of ``model``: three times its own bytes, at least ``MAX_BYTES``."""
    return max(MAX_BYTES, 3 * _own_bytes(model))


def _slots(module: nn.Module):
    """(module, kind, name, tensor) of every parameter, buffer and plain tensor attribute (a pruned layer's derived
    weight) of ``module`` and its children."""
    for m in module.modules():
        for n, t in list(m._parameters.items()):
            if t is not None:
                yield m, "param", n, t
        for n, t in list(m._buffers.items()):
            if t is not None:
                yield m, "buffer", n, t
        for n, t in list(m.__dict__.items()):
            if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter):
                yield m, "attr", n, t


def _own_bytes(module: nn.Module, free: set[int] = frozenset()) -> int:
    """Bytes of the distinct tensors ``module`` holds (parameters, buffers and plain tensor attributes such as a
    pruned layer's derived weight), leaving out storages in ``free``."""
    seen: dict[int, int] = {}
    for _, _, _, t in _slots(module):
        if not t.is_meta:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in free:
                seen[ptr] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _storages(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for _, _, _, t in _slots(module) if not t.is_meta}


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.equal``, after a look at the first elements (most candidates differ there: a mask, a masked weight)."""
    if a.is_contiguous() and b.is_contiguous() and a.numel() > 4096:
        if not torch.equal(a.reshape(-1)[:1024], b.reshape(-1)[:1024]):
            return False
    return torch.equal(a, b)


def _share_unchanged(layer: nn.Module, source: nn.Module) -> None:
    """Point each tensor of the compressed ``layer`` that equals a tensor of its input ``source`` (same shape, dtype
    and values) at that tensor instead of a copy: a pruned layer's original weight is its input's weight. Neither is
    ever changed in place (cached layers and the baseline are only read), so sharing is safe."""
    pool: dict[tuple, list[torch.Tensor]] = {}
    for _, _, _, t in _slots(source):
        if not t.is_meta:
            pool.setdefault((tuple(t.shape), t.dtype, t.stride()), []).append(t)
    if not pool:
        return
    shared = {t.untyped_storage().data_ptr() for ts in pool.values() for t in ts}
    for m, kind, n, t in list(_slots(layer)):
        if t.is_meta or t.untyped_storage().data_ptr() in shared:
            continue
        same = next((c for c in pool.get((tuple(t.shape), t.dtype, t.stride()), ()) if _equal(c, t)), None)
        if same is None:
            continue
        if kind == "param":
            m._parameters[n] = same if isinstance(same, nn.Parameter) and same.requires_grad == t.requires_grad \
                else nn.Parameter(same.detach(), requires_grad=t.requires_grad)
        elif kind == "buffer":
            m._buffers[n] = same.detach()
        else:
            m.__dict__[n] = same.detach()
    for m in layer.modules():  # a hook that keeps what it computed from a tensor swapped here for an equal one
        for h in list(m._forward_pre_hooks.values()):
            if callable(getattr(h, "rebind", None)):
                h.rebind(m)


def _holder(name: str, layer: nn.Module) -> nn.Module:
    """A model holding ``layer`` alone at the dotted ``name`` (empty modules along the path)."""
    root = parent = nn.Module()
    *path, last = name.split(".")
    for part in path:
        child = nn.Module()
        parent.add_module(part, child)
        parent = child
    parent.add_module(last, layer)
    return root


class LayerCache:
    """Compressed layers of variants of ``base`` (see the module docstring). Thread-safe; ``hits`` and ``misses``
    count layers found and compressed (for tests and benchmarks)."""

    def __init__(self, base: nn.Module, max_bytes: int | None = None) -> None:
        self.base = base
        self.max_bytes = budget(base) if max_bytes is None else max_bytes
        self._free = _storages(base)  # the baseline's tensors: shared by the layers, never counted
        self._layers: OrderedDict[tuple, tuple[nn.Module, int, int]] = OrderedDict()  # key -> (layer, bytes, run)
        self._lock = threading.Lock()
        self._runs = 0
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._layers)

    def _get(self, key: tuple, run: int) -> nn.Module | None:
        with self._lock:
            hit = self._layers.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._layers[key] = (hit[0], hit[1], run)
            self._layers.move_to_end(key)
            self.hits += 1
            return hit[0]

    def _put(self, key: tuple, layer: nn.Module, run: int) -> None:
        size = _own_bytes(layer, self._free)
        with self._lock:
            if size > self.max_bytes or key in self._layers:
                return
            if self.bytes + size > self.max_bytes:  # least recently used first, never a layer of this same run
                for old in [k for k, (_, _, r) in self._layers.items() if r != run]:
                    _, freed, _ = self._layers.pop(old)
                    self.bytes -= freed
                    if self.bytes + size <= self.max_bytes:
                        break
                if self.bytes + size > self.max_bytes:
                    return  # this recipe's layers fill the cache: keep those, not this one
            self._layers[key] = (layer, size, run)
            self.bytes += size

    def run(self) -> "CachedRun":
        """One recipe's pass through the cache (``apply_recipe`` makes one per call)."""
        with self._lock:
            self._runs += 1
            return CachedRun(self, self._runs)


class CachedRun:
    """The steps of one recipe applied to the cache's base model: ``step`` is ``apply_step`` with per-layer steps
    built from cached layers while every step so far was per-layer and started from this run's own last result."""

    def __init__(self, cache: LayerCache, run: int) -> None:
        self.cache, self.id = cache, run
        self.current: nn.Module | None = cache.base
        self.chain: dict[str, tuple] = {}  # layer name -> the per-layer settings of the steps that changed it

    def step(self, model: nn.Module, cfg: StepConfig, ctx: StepContext) -> nn.Module:
        per = cfg.per_layer(model, ctx) if model is self.current else None
        if per is None:  # a whole-model step: as apply_step, and every later step too
            self.current = None
            out = apply_step(model, cfg, ctx)
            for m in out.modules():  # it may have changed any layer: none is what its key says any more
                m.__dict__.pop(LAYER_KEY, None)
            return out
        out = private_copy(model)  # the module tree; every tensor shared (the layers below are swapped, not changed)
        for i, (name, one) in enumerate(per.items()):
            key = (name, *self.chain.get(name, ()), one.model_dump_json())
            layer = self.cache._get(key, self.id)
            if layer is None:
                alone = StepContext(data=ctx.data, seed=ctx.seed, replay=ctx.replay)
                source = model.get_submodule(name)
                layer = apply_step(_holder(name, source), one, alone).get_submodule(name)
                _share_unchanged(layer, source)
                self.cache._put(key, layer, self.id)
            own = private_copy(layer)  # this variant's own module objects over the kept tensors
            own.__dict__[LAYER_KEY] = key  # what built it (a move evaluator replays blocks of variants sharing it)
            out.set_submodule(name, own)
            self.chain[name] = key[1:]
            ctx.report((i + 1) / len(per), name)
        self.current = out
        return out


__all__ = ["LayerCache", "MAX_BYTES", "budget"]
