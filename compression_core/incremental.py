"""Predictions of compressed variants of one baseline model on fixed inputs, re-running only what lies downstream of
the first layer a variant changed.

Why: a move that changes only the last block of a transformer need not re-run the first five on the same inputs.
The baseline's block outputs on the inputs are recorded once (``prefix_cache.BlockPrefix``: children of a
``ModuleList``/``Sequential`` and their weighted children); for a variant, every module is compared with the
baseline's in the order the forward runs them (its type, its hooks, its own parameters and buffers, bit for bit),
and the blocks that ended before the first module that differs return their recorded outputs. Which technique
changed the module does not matter: a technique whose result depends on several layers (calibration, global
thresholds, coupled channels) has changed each of them, and each is compared. The result is exactly a from-scratch
forward's (tests/test_incremental.py checks equal predictions). Memory: the recorded outputs, at most ``max_bytes``.

Variants that share layers with an earlier variant: a live page's moves rarely differ from the baseline only late (a
slider applies a setting to every chosen layer: its first layer already differs), but a move usually differs from
the PREVIOUS move only late (one layer dropped from the choice). Layers a ``layer_cache.LayerCache`` built carry
their cache key (``LAYER_KEY``: the layer's name and the settings of every step that made it; the same key is the
same computation). The block outputs of the last few variants scored (at most ``max_bytes`` more, ``KEEP_VARIANTS``
of them) are kept with each module's identity in forward order (its layer key, or "the baseline's own": same type,
hooks and tensors); a variant whose modules are the same up to some module replays a kept variant's blocks that
ended before it, when that reaches further than the baseline's. A module that is neither (changed by a step outside
the cache) ends the match there: nothing after it is replayed from a variant.
"""

from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from . import inputs as I
from .prefix_cache import MAX_BYTES, BlockPrefix, _copy, _nbytes


def _own_tensors(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))


def _hooks(m: nn.Module) -> tuple[int, int]:
    return len(m._forward_hooks), len(m._forward_pre_hooks)


def _same(a: nn.Module, b: nn.Module) -> bool:
    """``a`` computes what ``b`` does: same type, hooks, and own parameters and buffers (bit for bit)."""
    if type(a) is not type(b) or _hooks(a) != _hooks(b):
        return False
    ta, tb = _own_tensors(a), _own_tensors(b)
    if [n for n, _ in ta] != [n for n, _ in tb]:
        return False
    for (_, x), (_, y) in zip(ta, tb):
        if x is y:
            continue
        if x.shape != y.shape or x.dtype != y.dtype or x.is_quantized or y.is_quantized or not torch.equal(x, y):
            return False
    return True


LAYER_KEY = "_compression_lab_layer_key"  # set by layer_cache on the layers it builds (see the module docstring)
KEEP_VARIANTS = 4


def _tagged_owner(name: str, tagged: dict[str, Any]) -> str | None:
    """The module among ``name`` and its ancestors that carries a layer key (the innermost), else None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        n = ".".join(parts[:i])
        if n in tagged:
            return n
    return None


class IncrementalEvaluator:
    """Forwards of variants of ``baseline`` on the fixed input ``x`` that replay the baseline's recorded block
    outputs before the first module the variant changed (see the module docstring). ``baseline`` is only read."""

    def __init__(self, baseline: nn.Module, x: Any, max_bytes: int = MAX_BYTES) -> None:
        self.x = x
        self.prefix = BlockPrefix(baseline, x, max_bytes)
        self.max_bytes = max_bytes
        self.order = [n for n in sorted(self.prefix.start, key=self.prefix.start.get) if n]  # forward order
        self.modules = dict(baseline.named_modules())
        self.replays = 0  # forwards that replayed at least one block (for tests and benchmarks)
        self.lock = threading.RLock()  # one variant patched at a time
        self._own: tuple[nn.Module, dict[str, Any]] | None = None  # the last kept variant's block outputs
        # blocks a variant's outputs are kept of: those that ran once in the recording, outermost first
        self.blocks = [b for b in self.order if b in self.prefix.blocks and self.prefix.calls.get(b) == 1]
        self.variants: list[tuple[list, dict[str, Any], int]] = []  # (signature, block outputs, bytes), newest first
        self.variant_replays = 0  # forwards that replayed blocks of an earlier variant (for tests and benchmarks)

    def first_changed(self, model: nn.Module) -> str | None:
        """The first module (in forward order) of ``model`` that differs from the baseline's, "" when the variant
        has modules the baseline has not (nothing is replayed then), None when nothing differs."""
        mods = dict(model.named_modules())
        if set(mods) - set(self.modules):
            return ""
        for n in self.order:
            m = mods.get(n)
            if m is None or not _same(m, self.modules[n]):
                return n
        return None

    def replayed(self, model: nn.Module) -> list[str]:
        """The blocks a forward of ``model`` on the input replays from the baseline's recording."""
        first = self.first_changed(model)
        if first is None:
            first = self.order[-1] if self.order else ""
        return self.prefix.replayed(first) if first else []

    def signature(self, model: nn.Module) -> list | None:
        """What computes each module of ``model``, in forward order: ("layer", owner, key, its tensors' identities
        and versions) inside a layer the layer cache built, ("base",) for a module the baseline's own (``_same``),
        None for anything else. None for the whole when ``model`` has no cache-built layer, or has modules the
        baseline has not outside such layers."""
        mods = dict(model.named_modules())
        tagged = {n: m.__dict__[LAYER_KEY] for n, m in mods.items() if LAYER_KEY in m.__dict__}
        if not tagged or not _same(model, self.modules[""]):
            return None
        if any(_tagged_owner(n, tagged) is None for n in set(mods) - set(self.modules)):
            return None
        sig: list = []
        for n in self.order:
            owner = _tagged_owner(n, tagged)
            if owner is not None:  # its key, and its tensors as they are (not changed in place since it was built)
                sig.append(("layer", owner, tagged[owner], tuple((id(t), t._version) for _, t in _own_tensors(
                    mods[n]))))
            else:
                m = mods.get(n)
                sig.append(("base",) if m is not None and _same(m, self.modules[n]) else None)
        return sig

    def _end(self, names) -> int:
        return max((self.prefix.end.get(n, -1) for n in names), default=-1)

    def _from_variant(self, sig: list | None, reach: int) -> tuple[list[str], dict[str, Any]] | None:
        """The kept variant's blocks replayable for a model of signature ``sig`` that reach further than ``reach``
        (the end clock of what the baseline's recording replays), or None."""
        best = None
        for vsig, outs, _ in self.variants if sig is not None else ():
            i = next((i for i, (a, b) in enumerate(zip(sig, vsig)) if a is None or a != b), len(sig))
            limit = self.prefix.start.get(self.order[i], -1) if i < len(self.order) else float("inf")
            names = [b for b in outs if self.prefix.end.get(b, limit) < limit]
            end = self._end(names)
            if names and end > reach:
                best, reach = (names, outs), end
        return best

    def _keep_variant(self, sig: list, outs: dict[str, Any]) -> None:
        size = sum(_nbytes(o) for o in outs.values())
        if not outs or size > self.max_bytes:
            return
        self.variants = [v for v in self.variants if v[0] != sig]
        self.variants.insert(0, (sig, outs, size))
        while len(self.variants) > KEEP_VARIANTS or sum(v[2] for v in self.variants) > self.max_bytes:
            self.variants.pop()

    def _matches(self, args: tuple, kwargs: dict) -> bool:
        """The call's inputs are exactly the recorded input (same tensors, in order, bit for bit)."""
        given = list(args) + list(kwargs.values())
        want = list(self.x.values()) if I.is_dict(self.x) else [self.x]
        return len(given) == len(want) and all(
            isinstance(g, torch.Tensor)
            and (g is w or (g.shape == w.shape and g.dtype == w.dtype and torch.equal(g, w)))
            for g, w in zip(given, want))

    @contextmanager
    def replaying(self, model: nn.Module, own: bool = False, sig: list | None = None):
        """Within: a forward of ``model`` (called as a whole) on inputs equal to the recorded ones replays the
        blocks before its first change; any other call (other inputs, a batch of them, a submodule called alone)
        runs as written. ``model``'s ``forward`` attributes are patched meanwhile: give a private copy of a shared
        model (``private_copy``). ``own=True``: replay instead the block outputs ``model`` itself produced in the
        last ``predict(model, keep=True)`` (the same model on the same inputs: a second pass, e.g. a secondary
        metric, re-runs only what lies outside the blocks). ``sig``: ``model``'s ``signature``, to replay a kept
        variant's blocks where they reach further than the baseline's. Yields how many blocks may be replayed."""
        outputs = self.prefix.outputs
        if own:
            if self._own is None or self._own[0] is not model:
                raise ValueError("replaying(own=True) needs predict(model, keep=True) on this model first")
            outputs = self._own[1]
            names = list(outputs)
        else:
            names = self.replayed(model)
            found = self._from_variant(sig, self._end(names)) if sig is not None else None
            if found is not None:
                names, outputs = found
                self.variant_replays += 1
        active = [False]
        root_had = model.__dict__.get("forward")
        root_fwd = model.forward

        def root(*a, **k):
            active[0] = self._matches(a, k)
            try:
                return root_fwd(*a, **k)
            finally:
                active[0] = False

        patched = [(model, root_had)]
        model.forward = root
        try:
            for n in names:
                m = model.get_submodule(n)
                had = m.__dict__.get("forward")
                m.forward = (lambda *a, _o=outputs[n], _f=m.forward, **k:
                             _copy(_o) if active[0] else _f(*a, **k))
                patched.append((m, had))
            yield len(names)
        finally:
            for m, had in patched:
                if had is None:
                    del m.forward
                else:
                    m.forward = had
            if own:
                self._own = None  # the kept outputs served their one second pass

    @torch.no_grad()
    def predict(self, model: nn.Module, keep: bool = False, before_each=None) -> torch.Tensor:
        """``model``'s output on the input (eval mode), as a from-scratch forward gives it. ``keep``: also keep
        ``model``'s own outputs of the top-level blocks (until the next ``predict``) for ``replaying(own=True)``.
        ``before_each``: a forward pre-hook put on every module of ``model`` for this forward only, once what is
        replayed is decided (a hook there beforehand is a change: a module with one is not the baseline's, and
        nothing before it would be replayed)."""
        was = model.training
        model.eval()
        own: dict[str, Any] = {}
        handles = []
        try:
            with self.lock:
                sig = self.signature(model)
                with self.replaying(model, sig=sig) as n:
                    self.replays += bool(n)
                    if keep or sig is not None:
                        mods = dict(model.named_modules())
                        for b in (b for b in self.blocks if b in mods):
                            handles.append(mods[b].register_forward_hook(
                                lambda _m, _a, o, _b=b: own.__setitem__(_b, _copy(o))))
                    if before_each is not None:
                        handles += [m.register_forward_pre_hook(before_each) for m in model.modules()]
                    try:
                        out = I.call(model, self.x).float()
                    finally:
                        for h in handles:
                            h.remove()
                self._own = (model, own) if keep else None
                if sig is not None:
                    self._keep_variant(sig, own)
                return out
        finally:
            model.train(was)

    def score(self, model: nn.Module, y: torch.Tensor, metric) -> float:
        """``metric(output, y)`` of ``model`` on the input (a Workload's ``metric``)."""
        return float(metric(self.predict(model), y))


def private_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree that shares its parameters and buffers (no weight is copied): patching a
    forward on it never touches the original, which other threads may be running."""
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    for m in model.modules():  # plain tensor attributes too (a pruned layer's derived ``weight``, not a leaf)
        memo.update((id(v), v) for v in m.__dict__.values() if isinstance(v, torch.Tensor))
    return copy.deepcopy(model, memo)


__all__ = ["IncrementalEvaluator", "private_copy"]
