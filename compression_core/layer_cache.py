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
Memory: the tensors the cached layers own (a pruned layer holds its original weight, its mask and the masked
weight; a simulated-quantized one its float and its rounded weight), at most ``max_bytes`` per cache, least
recently used first out; a layer larger than that is not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import nn

from .incremental import private_copy
from .technique import StepConfig, StepContext, apply_step

MAX_BYTES = 512 * 2**20


def _own_bytes(module: nn.Module) -> int:
    """Bytes of the distinct tensors ``module`` holds (parameters, buffers and plain tensor attributes such as a
    pruned layer's derived weight)."""
    seen: dict[int, int] = {}
    for m in module.modules():
        ts = list(m._parameters.values()) + list(m._buffers.values())
        ts += [v for v in m.__dict__.values() if isinstance(v, torch.Tensor)]
        for t in ts:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


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

    def __init__(self, base: nn.Module, max_bytes: int = MAX_BYTES) -> None:
        self.base, self.max_bytes = base, max_bytes
        self._layers: OrderedDict[tuple, tuple[nn.Module, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._layers)

    def _get(self, key: tuple) -> nn.Module | None:
        with self._lock:
            hit = self._layers.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._layers.move_to_end(key)
            self.hits += 1
            return hit[0]

    def _put(self, key: tuple, layer: nn.Module) -> None:
        size = _own_bytes(layer)
        with self._lock:
            if size > self.max_bytes or key in self._layers:
                return
            self._layers[key] = (layer, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, freed) = self._layers.popitem(last=False)
                self.bytes -= freed

    def run(self) -> "CachedRun":
        """One recipe's pass through the cache (``apply_recipe`` makes one per call)."""
        return CachedRun(self)


class CachedRun:
    """The steps of one recipe applied to the cache's base model: ``step`` is ``apply_step`` with per-layer steps
    built from cached layers while every step so far was per-layer and started from this run's own last result."""

    def __init__(self, cache: LayerCache) -> None:
        self.cache = cache
        self.current: nn.Module | None = cache.base
        self.chain: dict[str, tuple] = {}  # layer name -> the per-layer settings of the steps that changed it

    def step(self, model: nn.Module, cfg: StepConfig, ctx: StepContext) -> nn.Module:
        per = cfg.per_layer(model, ctx) if model is self.current else None
        if per is None:  # a whole-model step: as apply_step, and every later step too
            self.current = None
            return apply_step(model, cfg, ctx)
        out = private_copy(model)  # the module tree; every tensor shared (the layers below are swapped, not changed)
        for i, (name, one) in enumerate(per.items()):
            key = (name, *self.chain.get(name, ()), one.model_dump_json())
            layer = self.cache._get(key)
            if layer is None:
                alone = StepContext(data=ctx.data, seed=ctx.seed, replay=ctx.replay)
                layer = apply_step(_holder(name, model.get_submodule(name)), one, alone).get_submodule(name)
                self.cache._put(key, layer)
            out.set_submodule(name, private_copy(layer))  # this variant's own module objects over the kept tensors
            self.chain[name] = key[1:]
            ctx.report((i + 1) / len(per), name)
        self.current = out
        return out


__all__ = ["LayerCache", "MAX_BYTES"]
