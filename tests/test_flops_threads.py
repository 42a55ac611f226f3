"""Counting FLOPs while another thread runs the same model (a live server: the stage thread's forwards beside a
page's first estimate, or a model's warm-up) gives the quiet count: ``measure.flops`` and ``estimate_cost``
attribute FLOPs to layers from this thread's own op counts, not from FlopCounterMode's process-wide module table."""

from __future__ import annotations

import threading

import torch

from compression_core import apply_recipe, estimate_cost
from compression_core import inputs as I
from compression_core.measure import flops
from compression_core.workload import _with, resolve_workload


def test_flops_counted_beside_another_threads_forwards_equal_the_quiet_count():
    wl = resolve_workload("digits-mlp")
    steps = [{"kind": "prune_unstructured", "amount": 0.5}, {"kind": "quantize_dynamic"}]
    model = apply_recipe({"version": 1, "model": "digits-mlp", "steps": steps}, workload=wl, with_latency=False,
                         measure_before=False, measure_after=False).model
    x = I.take(wl.test.x, slice(0, 1))
    quiet = flops(model, x)
    quiet_cost = estimate_cost(wl.model, steps, wl)
    stop = threading.Event()

    def busy():
        with torch.no_grad():
            while not stop.is_set():
                I.call(model, x)
                I.call(wl.model, x)

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        for _ in range(30):
            assert flops(model, x) == quiet
            got = estimate_cost(wl.model, steps, _with(wl))  # a new workload object: a new trace of the same model
            assert (got.flops, got.nonzero_flops) == (quiet_cost.flops, quiet_cost.nonzero_flops)
    finally:
        stop.set()
        t.join()
