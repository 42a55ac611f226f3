"""A move's measurements for a live page: a compressed variant of a workload's model scored on a fixed preview
subset and on the whole test set, re-running only what lies downstream of the first layer the variant changed.

Why: on a 20-100 M parameter model a slider move that changes the last block should not cost a forward through the
first eleven, and one measurement should not run the network four times (metric, confusion matrix, secondary
metrics, each on its own forward). Here one ``IncrementalEvaluator`` per input set (the preview's first ``n`` test
items, the whole test split) replays the baseline's recorded block outputs before the first changed module, and the
workload's secondary metrics (``info["extra_metrics"]``) run under the same replay when they call the model on the
same inputs: they replay the blocks' outputs of the variant's own scoring pass just before (the same model on the
same inputs), so the second pass costs only what lies outside the blocks; any other call (other inputs, batches of
them) runs as written. The results are exactly a from-scratch evaluation's
(tests/test_live_eval.py checks equal predictions and metrics).

Memory, bounded: each set's recorded outputs are at most ``max_bytes`` (``prefix_cache.MAX_BYTES``, 512 MiB; over
it, blocks only, then no replay), and as much again for the blocks of the last few variants scored (a move that
shares its first layers with an earlier move replays those: ``incremental``); all are held while the evaluator
lives (the dashboard keeps one per model, two models per process). The baseline's parameters are shared, not
copied. ``layers``: the model's compressed-layer cache (``layer_cache``, at most 3x the model's bytes, at least
512 MiB), which a caller passes to ``apply_recipe`` to build the variants.

>>> ev = MoveEvaluator(wl, preview_n=60)
>>> ev.preview(variant)          # (metric on the first 60 test items, {"fidelity": ...} on them)
>>> ev.full(variant)             # (metric on the test split, extra metrics, the outputs (N, classes))
"""

from __future__ import annotations

import threading
import torch
from torch import nn

from . import extra_metrics
from . import inputs as I
from .incremental import IncrementalEvaluator, private_copy
from .layer_cache import LayerCache
from .prefix_cache import MAX_BYTES
from .workload import Workload


class Interrupted(Exception):
    """A measurement given up because its ``stop()`` said so (a newer move's preview is due first): nothing was
    measured, nothing is kept."""


class MoveEvaluator:
    """Preview and whole-test-set scores of variants of ``wl.model`` (see the module docstring). ``wl.model`` is
    only read: the recording runs on a private copy of its module tree, and every variant is scored on a private
    copy of its own tree (its tensors shared), so a model other threads run is never patched."""

    def __init__(self, wl: Workload, preview_n: int | None, max_bytes: int = MAX_BYTES) -> None:
        self.wl, self.n, self.max_bytes = wl, preview_n, max_bytes
        self._base = private_copy(wl.model)
        self.layers = LayerCache(wl.model)  # compressed layers of ``wl.model``'s variants (``apply_recipe(layers=)``)
        self._evs: dict[str, IncrementalEvaluator] = {}
        self._lock = threading.Lock()

    def _ev(self, which: str) -> IncrementalEvaluator:
        ev = self._evs.get(which)
        if ev is None:
            x = self.wl.test.x if which == "full" else I.take(self.wl.test.x, slice(0, self.n))
            ev = self._evs[which] = IncrementalEvaluator(self._base, x, self.max_bytes)
        return ev

    @property
    def bytes(self) -> int:
        """Bytes of recorded block outputs held now (the baseline's and the kept variants')."""
        return sum(ev.prefix.bytes + sum(v[2] for v in ev.variants) for ev in self._evs.values())

    def _score(self, model: nn.Module, which: str, stop=None) -> tuple[float, dict[str, float], torch.Tensor]:
        with self._lock:
            ev = self._ev(which)
            m = private_copy(model)
            check = None
            if stop is not None:  # asked before each module of the private copy runs (no other model is touched)
                def check(_module, _args):
                    if stop():
                        raise Interrupted(f"the {which} measurement gave way to a newer move")

            n = None if which == "full" else self.n
            y = self.wl.test.y if n is None else I.take(self.wl.test.y, slice(0, n))
            out = ev.predict(m, keep=True, before_each=check)
            with ev.lock, ev.replaying(m, own=True):  # the extra metrics' pass replays this variant's own blocks
                extra = extra_metrics.compute(m, self.wl, n=n)
            return float(self.wl.metric(out, y)), extra, out

    def prepare(self, which: str = "preview") -> None:
        """Record the baseline's block outputs on the ``which`` input set ("preview" or "full") now, what the first
        measurement on it would otherwise do first (a live page calls it when a model is opened, so the first move's
        measurement does not do it)."""
        if which == "preview" and self.n is None:
            raise ValueError("this evaluator has no preview subset (preview_n=None)")
        with self._lock:
            self._ev(which)

    def preview(self, model: nn.Module) -> tuple[float, dict[str, float]]:
        """(metric, extra metrics) of ``model`` on the preview subset (the first ``preview_n`` test items)."""
        if self.n is None:
            raise ValueError("this evaluator has no preview subset (preview_n=None)")
        metric, extra, _ = self._score(model, "preview")
        return metric, extra

    def full(self, model: nn.Module, stop=None) -> tuple[float, dict[str, float], torch.Tensor]:
        """(metric, extra metrics, outputs) of ``model`` on the whole test split. ``stop``: a callable asked before
        each module runs; when it returns True the pass ends with ``Interrupted`` (a live page's newer move)."""
        return self._score(model, "full", stop)


__all__ = ["Interrupted", "MoveEvaluator"]
