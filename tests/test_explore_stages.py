"""Explore's stages (issue 23): a move's numbers are first an estimate (size computed at once, the metric from
sensitivity curves), then measured on the preview subset, then on the whole test set; the page says which in exactly
one line starting with ``Stage: `` (a contract benchmarks.live waits for), every chart and metric shows the same
stage, and the server logs the stages each session was shown (dashboard/state/stages.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from browser_helpers import chromium, open_page, pick_model, served, skip_without_chromium, wait_idle
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
def test_minilm_move_stages_arrive_in_order_and_every_number_shows_the_same_stage():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.selectbox(key="x_model").set_value(MODEL).run()
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


@pytest.mark.browser
@pytest.mark.slow
def test_browser_each_stage_shows_one_label_and_the_chart_equals_the_metric(tmp_path):
    """In chromium on minilm-topics: after a move, at every stage the page shows exactly one 'Stage:' line and the
    accuracy chart's after value is the accuracy metric's value (or neither has one while the estimate is prepared)."""
    skip_without_chromium()

    read = """() => {
        const lines = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
            .map(e => e.innerText.trim()).filter(t => t.startsWith('Stage: '));
        const box = [...document.querySelectorAll('[data-testid="stMetric"]')]
            .find(m => m.innerText.trim().startsWith('Accuracy'));
        const metric = box ? box.querySelector('[data-testid="stMetricValue"]').innerText.trim() : null;
        const plot = [...document.querySelectorAll('.js-plotly-plot')]
            .find(g => g.layout && String((g.layout.title || {}).text || '').includes('Test accuracy'));
        const bars = plot && plot.data && plot.data[0] ? plot.data[0].text : null;
        const titles = [...document.querySelectorAll('.js-plotly-plot')].map(g => JSON.stringify(g.layout ? g.layout.title : null));
        const busy = !!document.querySelector('[data-testid="stStatusWidget"]');
        return {lines, metric, bars, busy, titles};
    }"""

    def idle(page):
        wait_idle(page, 300, timeout_ms=300_000)

    with served() as url:
        with chromium() as b:
            page = open_page(b, url, idle=idle)
            pick_model(page, MODEL)
            page.get_by_text("Baseline test accuracy 82", exact=False).wait_for(timeout=300_000)  # minilm's caption
            idle(page)
            page.get_by_text("unstructured (weights)", exact=True).click()
            page.get_by_text("Stage: ", exact=False).first.wait_for(timeout=300_000)
            stages, readings, deadline = {}, [], time.monotonic() + 600
            while time.monotonic() < deadline:
                page.wait_for_timeout(200)
                s = page.evaluate(read)
                if not s["lines"]:
                    continue
                page.wait_for_timeout(300)  # settled: the same reading twice, not a page half redrawn
                again = page.evaluate(read)
                if {k: v for k, v in again.items() if k != "busy"} != {k: v for k, v in s.items() if k != "busy"}:
                    continue
                assert len(s["lines"]) == 1, s["lines"]
                if s not in readings:
                    readings.append(s)
                kind = next(k for k in PREFIXES if s["lines"][0].startswith(k))
                stages.setdefault(kind, s)
                if kind == "Stage: full test set" and "Stage: preview" in stages:
                    break
            page.screenshot(path=str(tmp_path / "stages.png"))
            (tmp_path / "readings.json").write_text(json.dumps(readings, indent=1))
        assert {"Stage: preview", "Stage: full test set"} <= set(stages), stages
        for kind, s in stages.items():
            if s["metric"] == "…":  # the estimate is being prepared: the chart has the baseline's bar only
                assert kind == "Stage: estimate" and s["bars"] is not None and len(s["bars"]) == 1, (s, readings)
            else:
                assert s["bars"] is not None and s["bars"][1] == s["metric"], (kind, s, readings)
