"""Explore's stages (issue 23): a move's numbers are first an estimate (size computed at once, the metric from
sensitivity curves), then measured on the preview subset, then on the whole test set; the page says which in exactly
one line starting with ``Stage: `` (a contract benchmarks.live waits for), every chart and metric shows the same
stage, and the server logs the stages each session was shown (dashboard/state/stages.py). The same in chromium:
tests/test_dashboard_transformer.py (test_browser_each_stage_shows_one_label_and_the_chart_equals_the_metric, on the
MiniLM server that module starts once for its browser tests)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from dashboard_modules import dashboard_module

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
MODEL = "minilm-topics"
PREFIXES = ("Stage: estimate", "Stage: preview", "Stage: full test set")


@pytest.mark.parametrize("steps", [
    [{"kind": "prune_unstructured", "amount": 0.7, "targets": ["blocks.1.mlp.fc1", "blocks.0.attn.qkv"]}],
    [{"kind": "prune_unstructured", "amount": 0.5}, {"kind": "fake_quant", "bits": 4}],
    [{"kind": "quantize_dynamic"}],
    [{"kind": "quantize_weight_only", "bits": 4}],
])
def test_the_full_stage_stats_computed_from_the_cost_equal_measure(steps):
    """The full stage of a big model's move takes sizes, parameters, FLOPs and layer rows from ``estimate_cost``
    (the metric measured): each equals what ``measure`` gives the applied model."""
    import sample_models
    from compression_core import apply_recipe, estimate_cost, measure

    previews = dashboard_module("state.previews")
    wl = sample_models.load("digits-vit")
    recipe = {"version": 1, "model": "digits-vit", "steps": steps}
    model = apply_recipe(recipe, workload=wl, with_latency=False, measure_before=False, measure_after=False).model
    cost = estimate_cost(wl.model, recipe, wl).model_dump()
    ctx = {"wl": wl, "cost": cost, "bstats": measure(wl.model, wl, with_latency=False).model_dump()}
    assert previews._computed(ctx) and not cost["unknown"]
    ref = measure(model, wl, with_latency=False)
    got = previews._stats_from_cost(ctx, model, ref.accuracy, dict(ref.extra))
    for k in ("params", "nonzero_params", "size_bytes", "sparse_size_bytes", "theoretical_size_bytes", "simulated",
              "flops", "nonzero_flops", "accuracy", "metric"):
        assert getattr(got, k) == getattr(ref, k), k
    assert [r.model_dump() for r in got.layers] == [r.model_dump() for r in ref.layers]


def test_freed_memory_is_given_back_without_error():
    previews = dashboard_module("state.previews")
    previews._give_back_freed_memory()  # glibc's malloc_trim, or nothing elsewhere: never raises
    assert previews._LIBC is None or previews._LIBC.malloc_trim(0) in (0, 1)


def test_stage_log_keeps_order_and_logs_a_stage_once():
    stages = dashboard_module("state.stages")
    stages.clear()
    assert stages.record("s1", "m", "estimate") and stages.record("s1", "m", "preview")
    assert not stages.record("s1", "m", "preview")  # shown again on a rerun: logged once
    stages.record("s2", "m", "full")
    stages.record("s1", "m", "full")
    mine = stages.entries(session="s1", move="m")
    assert [e.stage for e in mine] == ["estimate", "preview", "full"]
    assert [e.t for e in mine] == sorted(e.t for e in mine)
    assert [e.session for e in stages.entries(move="m")] == ["s1", "s1", "s2", "s1"]
    with pytest.raises(ValueError):
        stages.record("s1", "m", "later")
    stages.clear()


def _stage_lines(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Stage: ")]


def _accuracy_shown(at) -> tuple[str | None, list[str]]:
    """(the accuracy metric's value, the accuracy chart's bar texts [before, after?])."""
    metric = next((m.value for m in at.metric if m.label.startswith("Accuracy")), None)
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = spec.get("layout", {}).get("title", {})
        if str(title.get("text", "")).startswith("Test accuracy"):
            return metric, list(spec["data"][0]["text"])
    raise AssertionError("no accuracy chart on the page")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def _forget_measured_moves() -> None:
    """Start from a server that has measured no move: another test in this process may have measured the same
    configuration (the stage thread and the stores are process-wide), and its preview would then be this page's
    first answer. Waits for the stage thread to go idle (it ends 1 s after its last measurement)."""
    previews, results = dashboard_module("state.previews"), dashboard_module("state.results")
    p = previews._pipeline()
    with p.cond:
        p.pending.clear()
    deadline = time.monotonic() + 300
    while p.thread is not None and p.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    with p.cond:
        p.previews.clear()
        p.fulls.clear()
    for lru in (results._store(), results._unmeasured()):
        with lru.lock:
            lru.items.clear()
            lru.weights.clear()


def test_minilm_move_stages_arrive_in_order_and_every_number_shows_the_same_stage():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.selectbox(key="x_model").set_value(MODEL).run()
    _forget_measured_moves()
    at.radio(key=f"x_prune_{MODEL}").set_value("unstructured (weights)").run()
    assert not at.exception, at.exception
    move = at.session_state["current_recipe"]
    state = sys.modules["state"]
    key = state.recipe_key(move)
    seen = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
        lines = _stage_lines(at)
        assert len(lines) == 1 and lines[0].startswith(PREFIXES), lines  # exactly one stage line on every run
        metric, bars = _accuracy_shown(at)
        if metric == "…":  # the estimate is being prepared: no after value anywhere
            assert len(bars) == 1 and lines[0].startswith("Stage: estimate")
        else:
            assert bars[1] == metric, (lines[0], bars, metric)  # the chart shows the metric's own stage
        size = next(m.value for m in at.metric if m.label == "File size (dense)")
        cost = state.cost_view(key)
        assert size == f"{cost['size_bytes'] / 1024:,.1f} KB"  # computed at once, the same on every stage
        seen.append(lines[0])
        if lines[0].startswith("Stage: full test set"):
            break
        time.sleep(0.5)
        at.run()
    assert seen[0].startswith("Stage: estimate"), seen[0]  # nothing had run when the page first answered
    log = [e.stage for e in state.stages.entries(move=key)]
    assert log == ["estimate", "preview", "full"], log  # the server's log, in order, once each
    times = [e.t for e in state.stages.entries(move=key)]
    assert times == sorted(times)


def test_a_due_preview_interrupts_a_running_whole_test_set_pass(monkeypatch):
    """A move whose preview is due makes the running whole-test-set pass of an earlier move give way: the new
    move's preview comes first, then its whole test set (the newest first), then the earlier move's pass again."""
    import threading

    previews = dashboard_module("state.previews")
    from compression_core.live_eval import Interrupted

    log: list[tuple[str, str]] = []
    a_running = threading.Event()

    def preview_now(key, ctx):
        log.append(("preview", key))
        return {"key": key}

    def full_now(key, ctx, stop=None):
        if key == "A" and ("gave way", "A") not in log:
            a_running.set()
            deadline = time.monotonic() + 60  # a guard only: the pass below waits for B's arrival
            while time.monotonic() < deadline:
                if stop():
                    log.append(("gave way", key))
                    raise Interrupted("a newer move")
                time.sleep(0.005)
        log.append(("full", key))
        return {"key": key}

    monkeypatch.setattr(previews, "_preview_now", preview_now)
    monkeypatch.setattr(previews, "_full_now", full_now)
    p = previews._Pipeline()
    p.want("A", {})
    assert a_running.wait(30)
    p.want("A", {})  # the page asking again for a move whose preview is shown: nothing gives way
    p.want("B", {})
    deadline = time.monotonic() + 60
    while not ("A" in p.fulls and "B" in p.fulls) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log == [("preview", "A"), ("gave way", "A"), ("preview", "B"), ("full", "B"), ("full", "A")]
    assert p.interrupted == 1 and not p.pending


def test_a_page_waiting_for_a_stage_wakes_when_it_is_stored_and_gives_way_to_a_new_request(monkeypatch):
    """Explore's slider move waits for its next stage in its own run (``wait_for_stage``): it returns READY the
    moment the pipeline stores the preview (woken, not polled: well inside one check interval of a long one),
    INTERRUPTED as soon as the session asks for another run (the student's next move), TIMED_OUT otherwise; and a
    stage already shown is not waited for again."""
    import threading

    previews = dashboard_module("state.previews")
    release = threading.Event()

    def preview_now(key, ctx):
        release.wait(30)
        return {"key": key}

    def full_now(key, ctx, stop=None):
        release.wait(30)
        return {"key": key}

    monkeypatch.setattr(previews, "_preview_now", preview_now)
    monkeypatch.setattr(previews, "_full_now", full_now)
    p = previews._Pipeline()
    monkeypatch.setattr(previews, "_pipeline", lambda: p)
    p.want("A", {})
    asked = threading.Event()
    assert previews.wait_for_stage("A", "estimate", asked.is_set, timeout_s=0.2) == previews.TIMED_OUT
    threading.Timer(0.1, asked.set).start()
    assert previews.wait_for_stage("A", "estimate", asked.is_set, timeout_s=30) == previews.INTERRUPTED
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(
        previews.wait_for_stage("A", "estimate", lambda: False, timeout_s=30, check_s=30)))
    waiter.start()
    time.sleep(0.1)
    assert not got  # still waiting: nothing measured
    release.set()  # the preview (and then the whole test set) is stored: the waiter wakes although check_s is 30 s
    waiter.join(10)
    assert got == [previews.READY]
    assert previews.wait_for_stage("A", "preview", lambda: False, timeout_s=10) == previews.READY  # the full set
    assert previews.wait_for_stage("A", "full", lambda: False, timeout_s=0.1) == previews.TIMED_OUT  # nothing later


def test_opening_a_big_model_records_its_preview_inputs_once_in_the_background(monkeypatch):
    """Explore opening a model with a preview stage starts ONE background recording of its preview inputs per
    process (``prepare_moves``); the first move's stage thread then finds the evaluator ready. A model without a
    preview stage starts nothing."""
    import sample_models  # noqa: F401
    from compression_core.workload import resolve_workload

    previews = dashboard_module("state.previews")
    wl = resolve_workload("digits-mlp")
    monkeypatch.setattr(previews, "_PREPARED", set())
    monkeypatch.setattr(previews, "preview_size", lambda ref: (40, len(wl.test)) if ref == "big" else None)
    monkeypatch.setattr(previews, "baseline", lambda ref: wl)
    evs = previews.LRU(size=2)
    monkeypatch.setattr(previews, "_evaluators", lambda: evs)
    assert previews.prepare_moves("small") is False and evs.get("small") is None
    assert previews.prepare_moves("big") is True
    assert previews.prepare_moves("big") is False  # once per process and model
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (evs.get("big") is not None and "preview" in evs.get("big")._evs):
        time.sleep(0.01)
    ev = evs.get("big")
    assert ev is not None and "preview" in ev._evs and ev.n == 40
    assert previews._evaluator({"ref": "big", "evaluators": evs, "wl": wl, "n": 40}) is ev  # the one the moves use


def test_a_move_is_built_from_the_models_layer_cache_and_equals_the_recipe_applied_whole():
    """The stage thread applies a move with its model's compressed-layer cache (``MoveEvaluator.layers``): a
    bit-width move after a first move finds the pruned layers there, and the model built equals ``apply_recipe``'s
    without the cache (tests/test_layer_cache.py checks the cache itself on the zoo)."""
    import sample_models
    import torch
    from compression_core import apply_recipe
    from compression_core import inputs as I

    previews = dashboard_module("state.previews")
    lru = dashboard_module("state.lru")
    wl = sample_models.load("digits-vit")
    ctx = {"ref": "digits-vit", "wl": wl, "n": 100, "evaluators": lru.LRU(size=2), "results": lru.LRU(size=4),
           "unmeasured": lru.LRU(size=4)}
    x = I.take(wl.test.x, slice(0, 32))
    for bits in (4, 5):
        recipe = {"version": 1, "model": "digits-vit", "steps": [
            {"kind": "prune_unstructured", "amount": 0.6}, {"kind": "fake_quant", "bits": bits}]}
        result, _ = previews._applied_now(previews.recipe_key(recipe), ctx)
        whole = apply_recipe(recipe, workload=wl, with_latency=False, measure_before=False, measure_after=False)
        with torch.no_grad():
            assert torch.equal(I.call(result.model.eval(), x), I.call(whole.model.eval(), x))
        assert [s.touched for s in result.steps] == [s.touched for s in whole.steps]
    cache = ctx["evaluators"].get("digits-vit").layers
    pruned = len(whole.steps[0].touched)
    assert cache.hits == pruned and cache.misses == 3 * pruned  # pruned once, quantized at 4 and at 5 bits


@pytest.mark.slow  # ~20 s: MiniLM in AppTest, two moves measured to the end
def test_an_estimate_whose_band_job_failed_says_why_instead_of_being_measured(monkeypatch):
    """On a 110 M model the band's job (random configurations measured on the whole test set) can hit the per-job
    memory or time limit; the estimate then stands without a band and the stage line says why (it said "being
    measured" forever)."""
    from streamlit.testing.v1 import AppTest

    from compression_core.estimate_metric import MetricCurves
    from compression_core.sensitivity import LayerCurve, layer_names
    from compression_core.workload import resolve_workload

    est = dashboard_module("state.estimates")
    model = resolve_workload(MODEL).model
    layers = [LayerCurve(name=n, type="Linear", params=model.get_submodule(n).weight.numel(),
                         points=[(0.0, 0.8), (0.9, 0.7)]) for n in layer_names(model, "prune", None,
                                                                                include_classifier=True)]
    unbanded = MetricCurves(model=MODEL, split="the calibration split (74 items)", samples=74, metric="accuracy",
                            baseline=0.8, curves={"prune": layers})
    monkeypatch.setattr(est, "curves", lambda ref: (unbanded, ""))
    monkeypatch.delitem(est._state().final, MODEL, raising=False)  # complete curves an earlier test left
    reason = ("curves job stopped: it needed more than the per-job memory limit (2,048 MB); start the server with "
              "`-- --job-memory-limit MB` (or COMPRESSION_LAB_JOB_MEMORY_MB) to change it")
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    key = est._key(MODEL, "band")
    est._state().failed[key] = reason
    try:
        at.selectbox(key="x_model").set_value(MODEL).run()
        at.radio(key=f"x_prune_{MODEL}").set_value("unstructured (weights)").run()
        # moves to settings no other test measures (a setting measured earlier in this process shows its numbers
        # at once, without an estimate stage)
        at.slider(key="x_prune_unstructured_amount").set_value(0.85).run()
        assert not at.exception, at.exception
        lines = _stage_lines(at)
        assert len(lines) == 1 and lines[0].startswith("Stage: estimate"), lines
        assert f"with no error band ({reason})" in lines[0] and "being measured" not in lines[0].split(";")[1], lines
        # without the failure, the same estimate says its band is being measured
        est._state().failed.pop(key)
        at.slider(key="x_prune_unstructured_amount").set_value(0.8).run()
        lines = _stage_lines(at)
        assert lines[0].startswith("Stage: estimate") and "its error band being measured" in lines[0], lines
    finally:
        est._state().failed.pop(key, None)
        # every measurement these moves started ends before the test does (no thread left in a forward at exit)
        pipeline, deadline = dashboard_module("state.previews")._pipeline(), time.monotonic() + 600
        while (pipeline.pending or pipeline.thread is not None) and time.monotonic() < deadline:
            time.sleep(0.2)
