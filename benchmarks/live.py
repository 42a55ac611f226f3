"""Live at real scale (issue 23): a slider move on Explore timed in chromium to each stage on screen, choosing the
model, page load, the sensitivity sweep as a job (and cached), the estimate's quality and the cost growth of a move.

    python -m benchmarks.live [--model REF] [--moves 20] [--compare-with GITREV] [--workload FILE] [--json]

Browser (Debian's chromium, Playwright, 1400x900), the server started as a user starts it (``streamlit run
dashboard/server.py``, ``benchmarks/local_app.py``): Explore on ``--model``, unstructured pruning and simulated n-bit
quantization picked, then ``--moves`` moves (at least 20), each to a configuration not seen before, mixing the pruning
sparsity slider, the bit-width slider and the layer choice (the last chosen layer removed). A MutationObserver in
the page stamps every change of the stage line and of the metrics' values (``performance.now()``); per move:

- ``size_ms``: move -> the metrics on screen change (size numbers, computed at once);
- ``estimate_ms`` / ``preview_ms`` / ``full_ms``: move -> the first ``Stage: estimate`` / ``Stage: preview`` /
  ``Stage: full test set`` line of this move on screen. THE CONTRACT with Explore: exactly one caption starts with
  one of these three prefixes. A checkout from before the stages (``--compare-with`` an older commit) is read by
  its old caption: "preview on N of M test ..." marks the preview, its disappearance (with new numbers) the full set.

``model_load_s``: choosing the model again after another (warm: loaded in this process); ``model_load_first_s``:
the first choice after a server start (disk caches as they are). ``page_load_s``: navigation -> first chart, warm
(median of 3 after a first visit); ``page_load_floor_s``: the same for a minimal Streamlit page holding one plotly
chart, served and loaded the same way (what Streamlit and chromium alone cost here). ``sensitivity_s``: a sweep of every Linear at 5 levels, pruning then
quantization, run as ``sensitivity`` jobs in the dashboard's worker pool (a real worker process of a one-worker pool, its layers
swept on the machine's cores, 1 intra-op thread each, as the dashboard runs it) with an empty disk cache; ``sensitivity_cached_s``: the same two jobs again (read from the disk cache).
``estimate_median_abs_error`` (points, or the metric's units when it is not a percentage) and ``inside_band``:
``compression_core.estimate_quality`` over ``--quality-n`` random configurations measured on the whole test set.
``cost_growth``: server time of a move (apply + preview subset + whole test set, the page's work) changing only the
last block's Linear layers vs only the first block's, in this process (1 thread). ``--workload FILE.py:attr`` adds
the same figure for another workload (e.g. ``benchmarks/bert_base_workload.py:workload``, a 12-layer BERT-base
shape with random weights).

``--compare-with GITREV``: the same browser moves against that revision, checked out into a temporary ``git
worktree`` under /tmp (removed afterwards), in the same run: ``previous`` holds its figures.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import sample_models  # noqa: F401  (registers the sample workloads by name)
from compression_core import disk_cache, estimate_cost, extra_metrics, layer_stats
from compression_core.live_eval import MoveEvaluator
from compression_core.recipe import apply_recipe, parse_recipe
from compression_core.workload import resolve_workload

from .common import emit, environment, parser, progress, table
from .local_app import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, start_app, stop

GOALS = {"estimate_ms": 300, "preview_ms": 1000, "full_ms": 5000, "model_load_s": 3.0, "page_load_s": 1.5,
         "sensitivity_s": 60.0, "sensitivity_cached_s": 0.0, "estimate_median_abs_error": 2.0, "inside_band": 0.8}
KEYS = ("estimate_ms", "preview_ms", "full_ms", "model_load_s", "page_load_s", "sensitivity_s",
        "sensitivity_cached_s", "estimate_median_abs_error", "inside_band")
PRUNE_LABEL = "unstructured (weights)"
FAKE_LABEL = "simulated n-bit (fake quant)"
PREFIXES = {"estimate": "Stage: estimate", "preview": "Stage: preview", "full": "Stage: full test set"}
SWEEP_LEVELS = {"prune": [0.3, 0.5, 0.7, 0.9, 0.95], "quantize": [8, 6, 4, 3, 2]}

# what the page shows now: the stage line (new contract, or the old preview caption), the metrics' values, busy.
# Visible elements only: while a run is in progress Streamlit keeps an element it replaced as a hidden copy
# (display: none) until the run ends, and Explore's slider-move run lasts until its next stage is shown.
READ_JS = """() => {
    const shown = e => e.checkVisibility();
    const caps = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].filter(shown)
        .map(e => e.innerText.trim());
    const stage = caps.filter(t => t.startsWith('Stage: '));
    const old = caps.find(t => /preview on \\d+ of \\d+ test/.test(t));
    const metrics = [...document.querySelectorAll('[data-testid="stMetric"]')].filter(shown)
        .map(m => m.innerText.trim()).join(' | ');
    const busy = !!document.querySelector('[data-testid="stStatusWidget"]');
    const charts = [...document.querySelectorAll('.js-plotly-plot, [data-testid=stVegaLiteChart]')].filter(shown).length;
    return {stage: stage.length ? stage[0] : (old ? 'OLD preview: ' + old : ''), n_stage: stage.length,
            contract: stage.length > 0, metrics, busy, charts};
}"""
OBSERVE_JS = """() => {
    if (window.__live) return;
    window.__live = [];
    const read = %s;
    let last = null;
    const note = () => {
        const r = read();
        const sig = r.stage + '\\u0001' + r.metrics;
        if (sig !== last) { last = sig; window.__live.push({t: performance.now(), stage: r.stage, metrics: r.metrics}); }
    };
    new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
    note();
}""" % READ_JS
SLIDERS_JS = """() => [...document.querySelectorAll('[data-testid="stSlider"]')].map((s, i) => {
    const th = s.querySelector('input[type="range"]');
    return {i, label: th ? (th.getAttribute('aria-label') || '') : '', now: th ? th.value : null,
            min: th ? th.getAttribute('min') : null, max: th ? th.getAttribute('max') : null};
})"""
TAGS = '[data-testid="stMultiSelect"] .react-aria-ComboBox [data-tag]'


def _log(msg: str) -> None:
    progress(msg)


def _kind(stage: str) -> str | None:
    for k, p in PREFIXES.items():
        if stage.startswith(p):
            return k
    if stage.startswith("OLD preview"):
        return "preview"
    return None


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------------------------------- browser
def _idle(page, timeout_ms: int = 600_000, settle_ms: int = 400) -> None:
    """Wait until the page is not running (twice, ``settle_ms`` apart)."""
    deadline = time.monotonic() + timeout_ms / 1e3
    while time.monotonic() < deadline:
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=timeout_ms, polling=100)
        page.wait_for_timeout(settle_ms)
        if not page.evaluate("() => !!document.querySelector('[data-testid=\"stStatusWidget\"]')"):
            return


def _choose(page, container_text: str, option: str, nth: int | None = None) -> None:
    """Pick ``option`` in the selectbox whose block contains ``container_text`` (or the ``nth`` selectbox)."""
    for attempt in range(4):
        boxes = page.locator('[data-testid="stSelectbox"]')
        box = boxes.nth(nth) if nth is not None else boxes.filter(has_text=container_text).first
        try:
            box.click(timeout=30_000)
            # a --workload model is listed as "NAME (file.py:attr)": the name alone picks it
            page.get_by_role("option", name=re.compile("^" + re.escape(option) + r"( \(.*\))?$")).first.click(
                timeout=10_000)
            return
        except Exception:  # the page re-rendered under the click: once it is idle, again
            if attempt == 3:
                raise
            page.keyboard.press("Escape")
            _idle(page)


FIRST_CAPTION_JS = """() => { const c = document.querySelector('[data-testid="stCaptionContainer"]');
    return c ? c.innerText.trim() : ''; }"""


def _wait_model(page, t0_page: float, before: str, timeout_s: float = 900) -> float:
    """Seconds (page clock, from ``t0_page``) until the model's description (the page's first caption) is no longer
    ``before``, charts are drawn and the page is idle."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        page.wait_for_timeout(50)
        r = page.evaluate(READ_JS)
        if not r["busy"] and r["charts"] and page.evaluate(FIRST_CAPTION_JS) not in ("", before):
            t = page.evaluate("performance.now()")
            page.wait_for_timeout(300)
            if not page.evaluate(READ_JS)["busy"]:
                return (t - t0_page) / 1e3
    return (page.evaluate("performance.now()") - t0_page) / 1e3


def _stage_times(records: list[dict], t0: float, before_metrics: str) -> dict:
    """Per stage, ms from the move (``t0``, page clock) to its first appearance among ``records``."""
    out: dict[str, Any] = {"size_ms": None, "estimate_ms": None, "preview_ms": None, "full_ms": None,
                           "estimate_has_metric": None}
    seen_other = False
    for r in records:
        if r["t"] < t0:
            continue
        ms = r["t"] - t0
        k = _kind(r["stage"])
        if out["size_ms"] is None and r["metrics"] and r["metrics"] != before_metrics:
            out["size_ms"] = ms
        if k == "estimate" and out["estimate_ms"] is None:
            out["estimate_ms"] = ms
            out["estimate_has_metric"] = "being prepared" not in r["stage"] and "not estimated" not in r["stage"]
        elif k == "preview" and out["preview_ms"] is None:
            out["preview_ms"] = ms
        elif (k == "full" or (k is None and r["stage"] == "" and seen_other)) and out["full_ms"] is None:
            if seen_other or (r["metrics"] and r["metrics"] != before_metrics):
                out["full_ms"] = ms
        if k in ("estimate", "preview"):
            seen_other = True
            out["full_ms"] = None  # new numbers under the last move's full line came first: not this move's
    return out


MINIMAL_APP = """import plotly.graph_objects as go
import streamlit as st
st.title("Minimal page")
st.plotly_chart(go.Figure(go.Bar(x=["before", "after"], y=[1, 2])))
"""


def page_load_floor(b, loads: int = 4) -> float | None:
    """The same page-load figure for a minimal Streamlit page holding one plotly chart, served and loaded the same
    way in the same browser (median of the warm loads): what Streamlit and chromium alone cost on this machine."""
    folder = Path(tempfile.mkdtemp(prefix="live-minimal-"))
    (folder / "app.py").write_text(MINIMAL_APP)
    port = free_port()
    proc = None
    try:
        proc = start_app(port, timeout=120, root=folder, script=folder / "app.py")
        times = []
        for _ in range(loads):
            pg = b.new_page(viewport={"width": 1400, "height": 900})
            t0 = time.perf_counter()
            pg.goto(f"http://127.0.0.1:{port}")
            pg.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            times.append(time.perf_counter() - t0)
            pg.close()
        _log(f"minimal Streamlit page loads {[round(x, 2) for x in times]} s")
        return statistics.median(times[1:])
    except Exception as e:  # the floor is context, not a goal: one line, the rest still measured
        _log(f"minimal page not measured ({type(e).__name__}: {str(e)[:200]})")
        return None
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def browser_moves(root: Path | str, model: str, moves: int = 20, seed: int = 0,
                  app_args: list[str] | None = None, timeout_s: float = 300) -> dict | None:
    """Page load, model choice and ``moves`` distinct moves on Explore in chromium against ``root``'s server."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright  # lazy: the browser measurements only

    port = free_port()
    t_server = time.perf_counter()
    proc = start_app(port, timeout=180, root=root, app_args=app_args)
    out: dict[str, Any] = {"root": str(root), "server_start_s": time.perf_counter() - t_server, "model": model}
    url = f"http://127.0.0.1:{port}"
    rng = random.Random(seed)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            loads = []
            for i in range(4):  # the first: the first visitor of a fresh server; then warm
                pg = b.new_page(viewport={"width": 1400, "height": 900})
                t0 = time.perf_counter()
                pg.goto(url)
                pg.locator(".js-plotly-plot, [data-testid=stVegaLiteChart]").first.wait_for(timeout=300_000)
                loads.append(time.perf_counter() - t0)
                _idle(pg)
                if i < 3:
                    pg.close()
            page = pg
            out["page_load_first_s"], out["page_load_s"] = loads[0], statistics.median(loads[1:])
            _log(f"{root}: page loads {[round(x, 2) for x in loads]} s")
            out["page_load_floor_s"] = page_load_floor(b)
            other = "digits-mlp" if model != "digits-mlp" else "digits-cnn"
            chosen: list[float] = []
            for i in range(3):  # the first choice after the start, then warm choices; each from another model
                _log(f"{root}: choosing {other} first")
                before = page.evaluate(FIRST_CAPTION_JS)
                _choose(page, "", other, nth=0)
                _wait_model(page, page.evaluate("performance.now()"), before)
                before = page.evaluate(FIRST_CAPTION_JS)
                t0 = page.evaluate("performance.now()")
                _choose(page, "", model, nth=0)
                chosen.append(_wait_model(page, t0, before))
                _log(f"{root}: choosing {model}: {chosen[-1]:.2f} s")
            out["model_load_first_s"], out["model_load_s"] = chosen[0], statistics.median(chosen[1:])
            # the controls: unstructured pruning and simulated n-bit quantization
            _log(f"{root}: picking {PRUNE_LABEL!r} and {FAKE_LABEL!r}")
            page.get_by_text(PRUNE_LABEL, exact=True).first.click()
            _idle(page)
            try:
                _choose(page, "Quantiz", FAKE_LABEL)
                _idle(page)
            except Exception as e:  # a checkout without it: moves on pruning and layers only
                _log(f"{root}: no '{FAKE_LABEL}' ({type(e).__name__}); pruning and layer moves only")
            page.evaluate(OBSERVE_JS)
            seen: set[tuple] = set()
            rows = []

            def sliders() -> dict[str, dict]:
                found = {}
                for s in page.evaluate(SLIDERS_JS):
                    lab = s["label"].lower()
                    if "sparsity" in lab or "amount" in lab:
                        found.setdefault("sparsity", s)
                    elif "bit" in lab:
                        found.setdefault("bits", s)
                return found

            def config() -> tuple:
                s = sliders()
                layers = page.locator(TAGS).count()
                return (s.get("sparsity", {}).get("now"), s.get("bits", {}).get("now"), layers)

            seen.add(config())
            attempts = 0
            while len(rows) < moves and attempts < moves * 6:
                attempts += 1
                s = sliders()
                kinds = [k for k in ("sparsity", "bits") if k in s] + ["layers"]
                what = rng.choice(kinds + ["sparsity"] * ("sparsity" in s))  # sparsity a little more often
                cur = config()
                if what == "layers":
                    if cur[2] <= 2:
                        continue
                    target = page.locator(TAGS).last.locator("button")
                    key = "click"
                else:
                    sl = s[what]
                    idx = sl["i"]
                    now, lo, hi = float(sl["now"]), float(sl["min"]), float(sl["max"])
                    key = rng.choice(["ArrowRight", "ArrowLeft"])
                    if now >= hi:
                        key = "ArrowLeft"
                    elif now <= lo:
                        key = "ArrowRight"
                    target = page.locator('[data-testid="stSlider"]').nth(idx).locator('input[type="range"]')
                    target.focus()
                before = page.evaluate(READ_JS)
                t0 = page.evaluate("performance.now()")
                if key == "click":
                    target.click()
                else:
                    page.keyboard.press(key)
                deadline = time.monotonic() + timeout_s
                res = None
                quiet_until = time.monotonic() + 5.0  # nothing at all on screen by then: the control did not move
                while time.monotonic() < deadline:
                    if time.monotonic() > quiet_until and not page.evaluate(f"() => window.__live.some(r => r.t >= {t0})") \
                            and config() == cur:
                        break
                    page.wait_for_timeout(50)
                    recs = page.evaluate(f"() => window.__live.filter(r => r.t >= {t0})")
                    res = _stage_times(recs, t0, before["metrics"])
                    now = page.evaluate(READ_JS)
                    if res["full_ms"] is not None and not now["busy"]:
                        if res["estimate_ms"] is not None or res["preview_ms"] is not None:
                            break
                        # new numbers under a full line and no stage line of this move yet: a toy model (straight
                        # to the full test set) once nothing else arrives for 2 s; else its estimate comes next
                        if page.evaluate("performance.now()") - t0 - res["full_ms"] > 2000:
                            break
                    if (not now["busy"] and _kind(now["stage"]) == "full" and config() != cur and res["full_ms"] is None
                            and page.evaluate("performance.now()") - t0 > 2000):
                        # the full test set again with the same numbers on screen (a move that changes no
                        # figure shown, e.g. 9 instead of 8 simulated bits): nothing to time, not counted
                        res["unchanged_numbers"] = True
                        break
                new = config()
                if new in seen or new == cur or (res or {}).get("unchanged_numbers"):
                    # nothing new (a slider at its end, a value seen) or nothing on screen changed: not a move
                    _idle(page)
                    continue
                seen.add(new)
                if res is None or res["full_ms"] is None:
                    _log(f"{root}: move {len(rows) + 1} ({what}) did not reach the full test set in {timeout_s:.0f} s")
                    res = res or {}
                rows.append({"control": what, "key": key, "config": list(new), **res})
                _log(f"{root}: move {len(rows)} {what} {key} -> " + ", ".join(
                    f"{k} {res.get(k):.0f}" for k in ("size_ms", "estimate_ms", "preview_ms", "full_ms")
                    if res.get(k) is not None))
                _idle(page)
                page.wait_for_timeout(200)
            out["contract"] = page.evaluate(READ_JS)["contract"]
            page.screenshot(path=str(Path(tempfile.gettempdir()) / "benchmarks-live.png"))
            b.close()
    finally:
        stop(proc)
    out["moves"] = rows
    for k in ("size_ms", "estimate_ms", "preview_ms", "full_ms"):
        out[k] = _median([r.get(k) for r in rows])
    out["estimate_with_metric_share"] = (sum(1 for r in rows if r.get("estimate_has_metric")) / len(rows)
                                         if rows else None)
    return out


# --------------------------------------------------------------------------------------------------- sensitivity
def sensitivity_jobs(model: str) -> dict:
    """Every Linear at 5 levels, pruning then quantization, as ``sensitivity`` jobs in a worker process with an
    empty disk cache; then the same jobs again (cached)."""
    sys.path.insert(0, str(ROOT / "dashboard"))
    import jobs  # lazy: the dashboard's job runner (dashboard/ on sys.path), only for this measurement

    tmp = tempfile.mkdtemp(prefix="live-cache-")
    old = os.environ.get(disk_cache.CACHE_ENV)
    os.environ[disk_cache.CACHE_ENV] = tmp  # the worker inherits it: a cold cache
    r = jobs.JobRunner(jobs.Limits(time_s=3600, memory_mb=4096, workers=1, warm=True))
    out: dict[str, Any] = {"levels": SWEEP_LEVELS}
    try:
        for run in ("first", "cached"):
            total = 0.0
            for tech, levels in SWEEP_LEVELS.items():
                t0 = time.perf_counter()
                jid = r.submit("sensitivity", {"model": model, "technique": tech, "levels": levels,
                                               "include_classifier": False, "nonce": run}, f"live-{run}")
                s = r.wait(jid, timeout=3600, poll=0.05)
                sec = time.perf_counter() - t0
                total += sec
                res = s.get("result") or {}
                out[f"{run}_{tech}_s"] = sec
                out[f"{run}_{tech}_cached"] = res.get("cached")
                out[f"{run}_{tech}_sweep_s"] = res.get("seconds")
                out["layers"] = len(res.get("layers", []))
                if s["state"] != "done":
                    out[f"{run}_{tech}_error"] = s.get("error")
                _log(f"sensitivity {tech} ({run}): {sec:.1f} s, state {s['state']}, cached {res.get('cached')}")
            out[f"{run}_s"] = total
    finally:
        r.shutdown()
        if old is None:
            os.environ.pop(disk_cache.CACHE_ENV, None)
        else:
            os.environ[disk_cache.CACHE_ENV] = old
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------------- quality
def quality(model: str, n: int) -> dict:
    """``compression_core.estimate_quality`` (helper H3's) on ``n`` random configurations, or why not."""
    try:
        from compression_core import estimate_quality  # lazy: helper H3's, absent from older checkouts
    except ImportError:
        return {"median_abs_error": None, "inside_band": None, "why": "compression_core.estimate_quality is missing"}
    from compression_core.estimate_metric import BAND_CHECKS, big_curve_levels  # lazy: as above

    t0 = time.perf_counter()
    wl = resolve_workload(model)
    big = extra_metrics.preview_items(wl) is not None
    # the curves Explore computes for this model: a big model's levels and its band checks
    q = estimate_quality(wl, n=n, seed=0, levels=big_curve_levels(wl.model) if big else None,
                         check=BAND_CHECKS["big" if big else "small"])
    scale = 100.0 if q.get("percent", True) else 1.0
    return {"median_abs_error": q["median_abs_error"] * scale, "inside_band": q["inside_band"],
            "band": (q.get("band") or 0) * scale, "band_slope": q.get("band_slope"), "scale": q.get("scale"),
            "median_band": (q.get("median_band") or 0) * scale, "band_80": (q.get("band_80") or 0) * scale,
            "n": q.get("n"),
            "units": "points" if scale == 100 else "metric units", "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------------- cost growth
def _blocks(model) -> list[str]:
    """Names of the blocks (children of the largest ModuleList) in order."""
    best: tuple[int, str] = (0, "")
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > best[0]:
            best = (len(m), name)
    return [f"{best[1]}.{i}" for i in range(best[0])]


def cost_growth(ref: str, repeats: int = 3) -> dict:
    """Server time of a move changing only the last block vs only the first: the work Explore's background
    pipeline does for a big model's move (``dashboard/state/previews.py``): apply the recipe, score the preview
    subset and the whole test set with one ``live_eval.MoveEvaluator`` (unchanged blocks replayed); sizes and
    FLOPs computed (``estimate_cost``), layer rows read (``layer_stats``). 1 thread, fresh configurations each
    time; the evaluator is built (and the baseline's blocks recorded) before the timed moves, as a page's first
    move on the model does."""
    torch.set_num_threads(1)
    wl = resolve_workload(ref)
    blocks = _blocks(wl.model)
    if len(blocks) < 2:
        return {"model": ref, "blocks": len(blocks), "why": "no repeated blocks (ModuleList) to compare"}
    n = extra_metrics.preview_items(wl) or min(64, len(wl.test))
    ev = MoveEvaluator(wl, n)
    t0 = time.perf_counter()
    ev.preview(wl.model)
    ev.full(wl.model)
    out: dict[str, Any] = {"model": ref, "blocks": len(blocks), "preview_items": n, "test_items": len(wl.test),
                           "record_s": time.perf_counter() - t0}
    for which, block in (("first", blocks[0]), ("last", blocks[-1])):
        layers = [f"{block}.{name}" for name, m in wl.model.get_submodule(block).named_modules()
                  if isinstance(m, nn.Linear)]
        times, parts = [], []
        for i in range(repeats):
            amount = round(0.3 + 0.1 * i + (0.05 if which == "last" else 0), 2)
            recipe = parse_recipe({"version": 1, "model": ref, "steps": [
                {"kind": "prune_unstructured", "amount": amount, "targets": layers}]})
            t0 = time.perf_counter()
            estimate_cost(wl.model, recipe, wl)  # the estimate stage's sizes (the page's stats take them from it)
            tc = time.perf_counter()
            res = apply_recipe(recipe, with_latency=False, measure_before=False, measure_after=False, workload=wl)
            t1 = time.perf_counter()
            ev.preview(res.model)
            t2 = time.perf_counter()
            ev.full(res.model)
            layer_stats(res.model)
            t3 = time.perf_counter()
            times.append(t3 - t0)
            parts.append({"cost_s": tc - t0, "apply_s": t1 - tc, "preview_s": t2 - t1, "full_s": t3 - t2})
        out[f"{which}_block_s"] = statistics.median(times)
        out[f"{which}_block_parts"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
        out[f"{which}_block_layers"] = len(layers)
        _log(f"cost growth {ref}: {which} block {block}: {[round(t, 2) for t in times]} s")
    out["last_over_first"] = out["last_block_s"] / out["first_block_s"]
    out["recorded_mib"] = ev.bytes / 2**20
    return out


# --------------------------------------------------------------------------------------------------- compare
def worktree(rev: str) -> Path:
    """``rev`` checked out into a temporary git worktree under /tmp."""
    path = Path(tempfile.mkdtemp(prefix="live-compare-", dir="/tmp"))
    path.rmdir()
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                   capture_output=True)
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def summary(browser: dict | None, sens: dict | None, q: dict | None) -> dict:
    """The medians the issue asks for, by their JSON keys."""
    b = browser or {}
    return {"estimate_ms": b.get("estimate_ms"), "preview_ms": b.get("preview_ms"), "full_ms": b.get("full_ms"),
            "size_ms": b.get("size_ms"), "model_load_s": b.get("model_load_s"),
            "model_load_first_s": b.get("model_load_first_s"), "page_load_s": b.get("page_load_s"),
            "page_load_first_s": b.get("page_load_first_s"), "page_load_floor_s": b.get("page_load_floor_s"),
            "sensitivity_s": (sens or {}).get("first_s"), "sensitivity_cached_s": (sens or {}).get("cached_s"),
            "estimate_median_abs_error": (q or {}).get("median_abs_error"), "inside_band": (q or {}).get("inside_band")}


def run(model: str = "minilm-topics", moves: int = 20, compare_with: str | None = None,
        workload: str | None = None, with_browser: bool = True, with_sensitivity: bool = True,
        quality_n: int = 50, with_cost: bool = True) -> dict:
    moves = max(20, moves)
    app_args = ["--workload", workload] if workload else None
    out: dict[str, Any] = {"environment": environment(), "model": model, "goals": GOALS, "notes": []}
    b = browser_moves(ROOT, model, moves, app_args=app_args) if with_browser else None
    sens = sensitivity_jobs(model) if with_sensitivity else None
    q = None
    if quality_n:
        try:
            q = quality(model, quality_n)
        except Exception as e:  # one line in the output, the rest still reported
            q = {"median_abs_error": None, "inside_band": None, "why": f"{type(e).__name__}: {e}"[:300]}
        if q.get("why"):
            out["notes"].append(f"estimate quality: {q['why']}")
    out.update(summary(b, sens, q))
    out["browser"], out["sensitivity"], out["quality"] = b, sens, q
    if with_cost:
        out["cost_growth"] = [cost_growth(model)] + ([cost_growth(workload)] if workload else [])
    if compare_with:
        path = worktree(compare_with)
        try:
            pb = browser_moves(path, model, moves, app_args=app_args) if with_browser else None
            out["previous"] = {**summary(pb, None, None), "rev": compare_with, "browser": pb}
        finally:
            remove_worktree(path)
    return out


def _text(r: dict) -> str:
    rows = []
    for k in KEYS + ("size_ms", "model_load_first_s", "page_load_first_s", "page_load_floor_s"):
        goal = GOALS.get(k)
        v = r.get(k)
        prev = (r.get("previous") or {}).get(k)
        met = None if v is None or goal is None else (v >= goal if k == "inside_band" else v <= goal)
        rows.append({"figure": k, "value": "-" if v is None else f"{v:.3g}",
                     "previous": "-" if prev is None else f"{prev:.3g}",
                     "goal": "-" if goal is None else (f">= {goal}" if k == "inside_band" else f"<= {goal}"),
                     "met": "-" if met is None else ("yes" if met else "no")})
    text = f"{r['model']}: medians of {len((r.get('browser') or {}).get('moves') or [])} moves\n"
    text += table(rows, [("figure", "figure", ""), ("value", "this checkout", ""), ("previous", "previous", ""),
                         ("goal", "goal", ""), ("met", "met", "")])
    for c in r.get("cost_growth") or []:
        if "last_over_first" in c:
            text += (f"\ncost growth {c['model']}: last block {c['last_block_s']:.2f} s vs first block "
                     f"{c['first_block_s']:.2f} s = {c['last_over_first']:.2f}x (goal <= 0.3x)")
    for n in r.get("notes") or []:
        text += f"\nnote: {n}"
    return text


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm-topics", help="the workload to move on (default minilm-topics)")
    p.add_argument("--moves", type=int, default=20, help="distinct moves (at least 20)")
    p.add_argument("--compare-with", default=None, help="a git revision measured the same way in this run")
    p.add_argument("--workload", default=None, help="FILE.py:attr given to the server and the cost-growth figure")
    p.add_argument("--quality-n", type=int, default=50, help="random configurations for the estimate's quality "
                   "(0: skip)")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--no-sensitivity", action="store_true")
    p.add_argument("--no-cost", action="store_true")
    args = p.parse_args(argv)
    r = run(args.model, args.moves, args.compare_with, args.workload, not args.no_browser, not args.no_sensitivity,
            args.quality_n, not args.no_cost)
    emit(r, args.json, _text(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
