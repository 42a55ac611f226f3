"""Block outputs on fixed inputs, replayed: after a change in one layer, a forward re-runs only the blocks that run
from that layer on (the others return their recorded output).

Why: a sensitivity sweep changes ONE layer at a time and evaluates the whole model on the same inputs; on a
transformer every evaluation re-ran the blocks before the changed one for nothing (a 6-block MiniLM: on average
more than half of each forward).

How, for any model (not only ``nn.Sequential``): one recording forward notes when every module starts and ends and
keeps the output of each *block*, a module held in an ``nn.ModuleList`` or ``nn.Sequential`` (transformer layers,
CNN stages) that runs exactly once. For a change in layer L, every block that ENDED before L STARTED computed from
inputs L cannot affect, so its ``forward`` is replaced (on the instance, restored afterwards) by one returning a
copy of the recorded output, and the model's own ``forward`` runs as written: the result is exactly a from-scratch
forward's (tests/test_prefix_cache.py checks equal outputs). Blocks whose output is not tensors in tuples, lists or
dicts, and models where recording would exceed ``max_bytes``, are run as usual.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from . import inputs as I

MAX_BYTES = 512 * 2**20  # recorded outputs kept at most (else: no replay, plain forwards)


def _copy(o: Any) -> Any:
    """A deep copy of tensors in tuples, lists and dicts (the replayed output may be changed in place downstream)."""
    if isinstance(o, torch.Tensor):
        return o.detach().clone()
    if isinstance(o, tuple) and type(o) is tuple:
        return tuple(_copy(v) for v in o)
    if isinstance(o, list):
        return [_copy(v) for v in o]
    if isinstance(o, dict) and type(o) is dict:
        return {k: _copy(v) for k, v in o.items()}
    if o is None or isinstance(o, (int, float, bool, str)):
        return o
    raise TypeError(type(o).__name__)


def _nbytes(o: Any) -> int:
    if isinstance(o, torch.Tensor):
        return o.numel() * o.element_size()
    if isinstance(o, (tuple, list)):
        return sum(_nbytes(v) for v in o)
    if isinstance(o, dict):
        return sum(_nbytes(v) for v in o.values())
    return 0


class BlockPrefix:
    """Recorded block outputs of ``model`` on input ``x`` (see the module docstring). ``skip_before(layer)`` is a
    context in which ``model``'s forward on ``x`` replays every block that ended before ``layer`` started."""

    def __init__(self, model: nn.Module, x: Any, max_bytes: int = MAX_BYTES) -> None:
        self.model, self.x = model, x
        names = {id(m): n for n, m in model.named_modules()}
        blocks = set()
        for parent in model.modules():
            if isinstance(parent, (nn.ModuleList, nn.Sequential)):
                blocks.update(names[id(c)] for c in parent.children() if id(c) in names)
        self.blocks = blocks
        # replayed: blocks and their direct children that hold weights (an attention, an FFN half: a change in a
        # block's second half then skips its first); finer than that costs more memory than it saves time
        heavy = set(blocks)
        for b in blocks:
            for cn, c in model.get_submodule(b).named_children():
                if any(True for _ in c.parameters()):
                    heavy.add(f"{b}.{cn}")
        self.start: dict[str, int] = {}
        self.end: dict[str, int] = {}
        calls: dict[str, int] = {}
        self.outputs: dict[str, Any] = {}
        clock = [0]
        total = [0]
        btotal = [0]  # bytes of blocks' outputs recorded
        handles = []

        def pre(name):
            def hook(mod, args):
                calls[name] = calls.get(name, 0) + 1
                self.start.setdefault(name, clock[0])
                clock[0] += 1
            return hook

        def post(name):
            def hook(mod, args, out):
                self.end[name] = clock[0]
                clock[0] += 1
                # fine children while everything fits twice over; blocks while the blocks alone fit (a big model's
                # later blocks are still recorded after its fine children have filled the budget)
                size = _nbytes(out)
                fits = total[0] <= 2 * max_bytes or (name in blocks and btotal[0] + size <= max_bytes)
                if name in heavy and calls.get(name) == 1 and fits:
                    try:
                        self.outputs[name] = _copy(out)
                        total[0] += size
                        btotal[0] += size if name in blocks else 0
                    except TypeError:
                        pass
            return hook

        for n, m in model.named_modules():
            handles.append(m.register_forward_pre_hook(pre(n)))
            handles.append(m.register_forward_hook(post(n)))
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.reference = I.call(model, x)
        finally:
            for h in handles:
                h.remove()
            model.train(was)
        self.calls = calls
        self.outputs = {n: o for n, o in self.outputs.items() if calls.get(n) == 1}
        self.fine = True  # every module that runs once is replayed (sub-block granularity)
        if total[0] > max_bytes:  # too much: blocks only, or nothing
            self.fine = False
            self.outputs = {n: o for n, o in self.outputs.items() if n in blocks}
            if sum(_nbytes(o) for o in self.outputs.values()) > max_bytes:
                self.outputs = {}
        self.bytes = sum(_nbytes(o) for o in self.outputs.values())

    def replayed(self, layer: str) -> list[str]:
        """The blocks a change in ``layer`` leaves as recorded (those that ended before it started)."""
        s = self.start.get(layer)
        if s is None:
            return []
        return [n for n in self.outputs if self.end.get(n, s) < s]

    @contextmanager
    def skip_before(self, layer: str | None):
        """Within: blocks before ``layer`` return their recorded outputs (None: nothing replayed)."""
        patched = []
        try:
            for n in self.replayed(layer) if layer is not None else []:
                m = self.model.get_submodule(n)
                had = m.__dict__.get("forward")
                out = self.outputs[n]
                m.forward = lambda *a, _o=out, **k: _copy(_o)
                patched.append((m, had))
            yield
        finally:
            for m, had in patched:
                if had is None:
                    del m.forward
                else:
                    m.forward = had


__all__ = ["BlockPrefix", "MAX_BYTES"]
