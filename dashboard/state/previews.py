"""Previews of big models: a big model (its workload's ``info["preview_items"]``, or over 5 M parameters) is first
measured on a fixed preview subset, its first N test items, so a slider move shows numbers quickly; the whole test set
is measured in a background thread (one at a time per process, on a copy of the model) and replaces the preview when
it is done.

``live_view`` is Explore's path through the three stages of a move (``stages.py``): nothing measured yet
(``estimate``: the page shows the computed size and the estimated metric, ``estimates.py``), the preview subset
measured (``preview``), the whole test set measured (``full``). A big model's measurements run in one background
thread per process (``_Pipeline``), the newest move first, so the page never waits for them; small models are
measured at once and go straight to ``full``. ``wait_for_stage`` lets a slider move's run wait for its next stage
(woken the moment the thread stores it) instead of polling for it."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable

import streamlit as st
import torch

from compression_core import CompressionError, extra_metrics, measure
from compression_core.cost import prepare_estimates

from compression_core.live_eval import Interrupted, MoveEvaluator
from compression_core.measure import ModelStats, confusion_from_outputs, layer_stats
from compression_core.recipe import apply_recipe, parse_recipe
from compression_core.sensitivity import intra_op_threads

from .lru import LRU
from .recipes import recipe_key
from .estimates import cost_view, layer_rows
from .results import _store, _unmeasured, applied, baseline_view, extra_view, run_recipe
from .stages import ESTIMATE, FULL, PREVIEW
from .workloads import baseline, facts, one_line


def preview_size(ref: str) -> tuple[int, int] | None:
    """(preview items, test items) when a change on ``ref`` is first measured on a preview subset, else None."""
    wl = baseline(ref)
    n = extra_metrics.preview_items(wl)
    return None if n is None else (n, len(wl.test))


@st.cache_data(show_spinner=False, max_entries=128)
def preview_view(key: str) -> dict:
    """Numbers of a recipe's result on the preview subset only (size and parameters are the whole model's)."""
    result, seconds = applied(key)
    ref = json.loads(key)["model"]
    n, total = preview_size(ref)
    wl = baseline(ref)
    stats = measure(result.model, extra_metrics.preview_workload(wl, n), name=wl.name, with_latency=False)
    return {"stats": stats.model_dump(), "confusion": None, "extra": extra_metrics.compute(result.model, wl, n=n),
            "preview": [n, total], "baseline_accuracy": baseline_preview_metric(ref),
            "steps": [s.to_json_dict() for s in result.steps], "seconds": seconds}


@st.cache_data(show_spinner=False)
def baseline_preview_metric(ref: str) -> float:
    """The baseline's metric on the preview subset (what a preview's change is measured against)."""
    wl = baseline(ref)
    return float(wl.score(wl.model, "test") if preview_size(ref) is None else
                 extra_metrics.preview_workload(wl, preview_size(ref)[0]).score(wl.model, "test"))


# ------------------------------------------------------------------------------------------------ Explore's stages
class _Pipeline:
    """Measurements of moves on big models in ONE background thread per process: the newest move first, its preview
    subset, then its whole test set; moves not started yet beyond ``MAX_PENDING`` newer ones are dropped (the
    student has moved on; coming back starts them again). A whole-test-set pass (seconds on a 20 M parameter model)
    gives way when a move whose preview is due arrives: it ends at once (``Interrupted``), the new move's preview
    is measured first, and the pass starts again later (a slider dragged through five values shows each one's
    preview within a second, not after the previous values' whole test sets). No Streamlit calls in the thread:
    what it needs is resolved in the page's thread and passed in ``ctx``."""

    MAX_PENDING = 3
    KEEP = 128
    # The thread's forward passes take the GIL back after each torch op; while a page rerun (pure Python) holds it,
    # each such hand-over waited up to the interpreter's 5 ms switch interval: a MiniLM whole-test-set pass took 4.6 s
    # beside a busy Python thread instead of 2.9 s alone; with 1 ms, 3.3 s (the page's own reruns barely notice)
    SWITCH_INTERVAL_S = 0.001

    def __init__(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), self.SWITCH_INTERVAL_S))  # for the whole server process
        self.cond = threading.Condition()
        self.pending: OrderedDict[str, dict] = OrderedDict()
        self.previews: OrderedDict[str, Any] = OrderedDict()
        self.fulls: OrderedDict[str, Any] = OrderedDict()
        self.thread: threading.Thread | None = None
        self.preview_due = False  # a move waits for its preview: a running whole-test-set pass gives way
        self.interrupted = 0  # whole-test-set passes that gave way (for tests and benchmarks)

    def want(self, key: str, ctx: dict) -> None:
        with self.cond:
            if key in self.fulls:
                return
            if key not in self.previews:
                self.preview_due = True
            self.pending[key] = ctx
            self.pending.move_to_end(key)
            while len(self.pending) > self.MAX_PENDING:
                self.pending.popitem(last=False)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True, name="explore-stages")
                self.thread.start()
            self.cond.notify()

    def _keep(self, d: OrderedDict, key: str, value: Any) -> None:
        d[key] = value
        d.move_to_end(key)
        while len(d) > self.KEEP:
            d.popitem(last=False)

    def _run(self) -> None:
        while True:
            with self.cond:
                # idle for 1 s: the thread ends (the next move starts another)
                if not self.pending and not self.cond.wait_for(lambda: bool(self.pending), timeout=1):
                    self.thread = None
                    return
                key, ctx = next(reversed(self.pending.items()))
                first = key not in self.previews
                self.preview_due = False
            try:
                out: Any = _preview_now(key, ctx) if first else _full_now(key, ctx, stop=lambda: self.preview_due)
            except Interrupted:  # a newer move's preview first; this pass starts again after it (still pending)
                with self.cond:
                    self.interrupted += 1
                _give_back_freed_memory()
                continue
            except Exception as e:  # shown as one line by the page
                out = CompressionError(one_line(e))
            _give_back_freed_memory()
            with self.cond:
                if first:
                    self._keep(self.previews, key, out)
                if not first or isinstance(out, Exception):
                    self._keep(self.fulls, key, out)
                    self.pending.pop(key, None)
                self.cond.notify_all()  # a page waiting for this stage (``wait_for_stage``) shows it at once


def _give_back_freed_memory() -> None:
    """Return the C heap's freed pages to the OS (glibc ``malloc_trim``; elsewhere nothing). A measurement of a
    110 M parameter model allocates and frees GBs (copies, masks, activations) in threads whose heaps glibc keeps:
    the BERT-base server's resident memory swung 7 -> 15 GB between moves while its live tensors were ~5 GB."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError):  # not glibc
        return None


_LIBC = _libc()


@st.cache_resource(show_spinner=False)
def _pipeline() -> _Pipeline:
    return _Pipeline()


@st.cache_resource(show_spinner=False)
def _evaluators() -> LRU:
    return LRU(size=2)  # each holds a private module tree of a big model and its recorded block outputs


def _applied_now(key: str, ctx: dict) -> tuple[Any, float]:
    hit = ctx["results"].get(key) or ctx["unmeasured"].get(key)
    if hit is not None:
        return hit
    t0 = time.perf_counter()
    result = apply_recipe(parse_recipe(json.loads(key)), with_latency=False, measure_before=False,
                          measure_after=False, workload=ctx["wl"], layers=_evaluator(ctx).layers)
    value = (result, time.perf_counter() - t0)
    ctx["unmeasured"].put(key, value)
    return value


_EVALUATOR_LOCK = threading.Lock()


def _evaluator(ctx: dict) -> MoveEvaluator:
    """The move evaluator of the move's model (one per model and process; ``live_eval``: only the blocks
    downstream of the first changed layer re-run, on the preview inputs and on the whole test set)."""
    ref, evs = ctx["ref"], ctx["evaluators"]
    with _EVALUATOR_LOCK:  # the stage thread and a model's warm-up thread: one evaluator per model
        ev = evs.get(ref)
        if ev is None:
            ev = MoveEvaluator(ctx["wl"], ctx["n"])
            evs.put(ref, ev)
        return ev


_PREPARED: set[str] = set()


def prepare_moves(ref: str) -> bool:
    """Once per process and model, when Explore opens a big model: its move evaluator made and the baseline's block
    outputs on the preview subset recorded, in a background thread, instead of inside the first move's preview
    (minilm-topics: ~0.3 s of work), then the size arithmetic's first-use work (``prepare_estimates``: each
    prunable weight's magnitudes sorted, ~0.9 s, which the first move's estimate used to wait for).
    True when this call started it. A failure is left to the first move, which records them itself and says what
    failed."""
    pv = preview_size(ref)
    if pv is None:
        return False
    with _EVALUATOR_LOCK:
        if ref in _PREPARED:
            return False
        _PREPARED.add(ref)
    ctx = {"ref": ref, "wl": baseline(ref), "n": pv[0], "evaluators": _evaluators()}

    def warm() -> None:
        try:
            with intra_op_threads(PREVIEW_THREADS):  # as the preview's own forwards run (see PREVIEW_THREADS)
                _evaluator(ctx).prepare("preview")
            prepare_estimates(ctx["wl"].model, ctx["wl"])  # the size arithmetic's first-use work (magnitudes sorted)
        except Exception:  # the first move's measurement records them and reports what failed, in one line
            pass

    threading.Thread(target=warm, daemon=True, name="explore-prepare").start()
    return True


def _cost(ctx: dict) -> dict:
    """The move's ``estimate_cost`` view: the page computes it just after handing the move to the stage thread
    (a Future), so the thread starts applying ~0.1 s earlier; {} where it failed (the stats are measured then)."""
    cost = ctx["cost"]
    if isinstance(cost, Future):
        try:
            return cost.result(timeout=60)
        except Exception:
            return {}
    return cost


def _computed(ctx: dict) -> bool:
    cost = _cost(ctx)
    return all(cost.get(k) is not None for k in ("size_bytes", "params", "nonzero_params", "flops", "nonzero_flops")) \
        and \
        bool(cost.get("layers"))


# The preview's forward and the whole-test-set pass run on both cores (``PREVIEW_THREADS`` intra-op threads; MiniLM's
# 60 sentences 0.50 -> 0.28 s, its 318 3.1 -> 1.8 s): the student is waiting for them (the issue's "evaluation uses
# both cores"; latency stays a one-thread figure, timed in a worker). The whole test set's outputs are the same bits
# on 1 and 2 threads on the models checked here (minilm-topics' 318 sentences, digits-cnn: their matrix products
# and row-wise norms split rows between threads, not sums), so its numbers are still the CLI's (one thread).
# The intra-op thread count is process-wide: it is set back the moment the forward ends.
PREVIEW_THREADS = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def _preview_now(key: str, ctx: dict) -> dict:
    """The preview subset's view of a move: its metric and extra metrics from the move evaluator; sizes,
    parameters, FLOPs and per-layer rows computed (``estimate_cost``), or measured when they cannot be computed."""
    result, seconds = _applied_now(key, ctx)
    wl, n, total = ctx["wl"], ctx["n"], ctx["total"]
    with intra_op_threads(PREVIEW_THREADS):
        metric, extra = _evaluator(ctx).preview(result.model)
    if _computed(ctx):
        stats = {"accuracy": metric, "layers": layer_rows(_cost(ctx), ctx["bstats"]), "metric": wl.metric_name,
                 "model": wl.name}
    else:
        stats = measure(result.model, extra_metrics.preview_workload(wl, n), name=wl.name, with_latency=False,
                        scores=(metric, extra)).model_dump()
    return {"stats": stats, "confusion": None, "extra": extra, "preview": [n, total],
            "baseline_accuracy": ctx["base_preview"], "steps": [s.to_json_dict() for s in result.steps],
            "seconds": seconds}


def _stats_from_cost(ctx: dict, model: torch.nn.Module, metric: float, extra: dict) -> ModelStats:
    """The whole test set's stats of a move: the metric and extra metrics measured, every size, parameter and FLOP
    count computed (``estimate_cost``: exact, the same numbers the estimate stage showed; no sparse encoding or FLOP
    counting forward), the layer rows read from the model (their types and dtypes), latency and peak RAM not
    measured here (timed on request)."""
    wl, cost = ctx["wl"], _cost(ctx)
    return ModelStats(
        model=f"{wl.name} (recipe)", params=cost["params"], nonzero_params=cost["nonzero_params"],
        size_bytes=cost["size_bytes"], sparse_size_bytes=cost.get("sparse_size_bytes"),
        theoretical_size_bytes=cost.get("theoretical_size_bytes"),
        simulated=cost.get("theoretical_size_bytes") is not None, latency_ms=None, batch_size=1, threads=1,
        accuracy=metric, metric=wl.metric_name, higher_is_better=bool(getattr(wl.metric, "higher_is_better", True)),
        metric_percent=bool(getattr(wl.metric, "percent", True)), extra=extra, flops=cost["flops"],
        nonzero_flops=cost["nonzero_flops"], layers=layer_stats(model))


def _full_now(key: str, ctx: dict, stop=None) -> dict:
    """The whole test set's view of a move: ONE evaluator pass gives the metric and the confusion matrix, the extra
    metrics replay the same unchanged blocks; the rest of the stats as ``measure`` gives them (no forward on the
    test set). The measured result goes into the per-process store. ``stop``: see ``MoveEvaluator.full``."""
    pre = _applied_now(key, ctx)
    result, seconds = pre
    wl, f = ctx["wl"], ctx["facts"]
    t0 = time.perf_counter()
    with intra_op_threads(PREVIEW_THREADS):
        metric, extra, out = _evaluator(ctx).full(result.model, stop=stop)
    computed = _computed(ctx) and not _cost(ctx).get("unknown")
    stats = _stats_from_cost(ctx, result.model, metric, extra) if computed else \
        measure(result.model, wl, name=f"{wl.name} (recipe)", with_latency=False, scores=(metric, extra))
    cm = confusion_from_outputs(out, wl.test.y, f["num_classes"]).numpy() if f["classification"] else None
    value = (dataclasses.replace(result, after=stats), seconds + time.perf_counter() - t0)
    ctx["results"].put(key, value)
    return {"stats": stats.model_dump(), "confusion": cm, "extra": extra,
            "steps": [s.to_json_dict() for s in result.steps], "seconds": value[1]}


def live_view(recipe: dict) -> dict:
    """Explore's view of a move: {"stage": "estimate" | "preview" | "full", "view": the measured view or None}.
    A big model's first call starts its measurements in the background and returns the estimate stage at once;
    later calls return the newest stage measured. A small model (or a move already measured, e.g. trained) is
    measured here and is at once ``full``. A measurement that failed raises its one line."""
    key = recipe_key(recipe)
    ref = recipe["model"]
    pv = preview_size(ref)
    p = _pipeline()
    with p.cond:
        full, prev = p.fulls.get(key), p.previews.get(key)
    for v in (full, prev):
        if isinstance(v, Exception):
            raise v
    if full is not None:  # measured by the pipeline: its view, not measured again here
        return {"stage": FULL, "view": full}
    if pv is None or _store().get(key) is not None:  # a small model, or a big one trained / adopted from a job
        view = dict(run_recipe(recipe))
        view.setdefault("extra", extra_view(key, ref))
        return {"stage": FULL, "view": view}
    cost: Future = Future()  # computed below, while the stage thread already applies the recipe
    p.want(key, {"ref": ref, "wl": baseline(ref), "facts": facts(ref), "n": pv[0], "total": pv[1],
                 "base_preview": baseline_preview_metric(ref), "results": _store(), "unmeasured": _unmeasured(),
                 "cost": cost, "bstats": baseline_view(ref)["stats"], "evaluators": _evaluators()})
    try:
        cost.set_result(cost_view(key))
    except BaseException as e:
        cost.set_exception(e)
        raise
    if prev is not None:
        return {"stage": PREVIEW, "view": prev}
    return {"stage": ESTIMATE, "view": None}


def newer_stage(key: str, stage: str) -> bool:
    """True when a later stage than ``stage`` of the move ``key`` has been measured (or has failed): the page's
    poller reruns then."""
    p = _pipeline()
    with p.cond:
        return _newer(p, key, stage)


def _newer(p: _Pipeline, key: str, stage: str) -> bool:
    if key in p.fulls:
        return stage != FULL
    return stage == ESTIMATE and key in p.previews


READY, INTERRUPTED, TIMED_OUT = "ready", "interrupted", "timed out"


def wait_for_stage(key: str, stage: str, interrupted: Callable[[], bool], timeout_s: float,
                   check_s: float = 0.02) -> str:
    """Block until a later stage than ``stage`` of the move ``key`` is measured (``READY``: woken by the pipeline
    the moment it stores it, no polling delay), ``interrupted()`` is true (``INTERRUPTED``: checked every
    ``check_s``; the page passes "a rerun or stop of this session is pending", e.g. the student's next move), or
    ``timeout_s`` passes (``TIMED_OUT``). Holds no lock while it sleeps (a condition wait)."""
    p = _pipeline()
    deadline = time.monotonic() + timeout_s
    with p.cond:
        while True:
            if _newer(p, key, stage):
                return READY
            if interrupted():
                return INTERRUPTED
            left = deadline - time.monotonic()
            if left <= 0:
                return TIMED_OUT
            p.cond.wait(min(check_s, left))
