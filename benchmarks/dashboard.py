"""Dashboard responsiveness: server-side rerun time for a slider change on each digits model, and page load to
first chart in headless chromium.

    python -m benchmarks.dashboard [--json] [--no-browser]

Reruns are timed with Streamlit's AppTest (the whole script run a slider change triggers, server side, no
browser): every value is a new configuration (a cache miss: the library applies the recipe and measures it), so
these are the worst case of a student dragging a slider. Latency timing is not in the rerun path (it runs on a
button and is cached). Page load is measured in Debian's chromium (`/usr/bin/chromium`) against `streamlit run`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from .common import emit, environment, parser, table
from .local_app import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, stop

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
DIGITS = ["digits-mlp", "digits-cnn", "digits-vit", "digits-lstm"]
SPARSITIES = [round(0.05 * i, 2) for i in range(1, 20)]  # 19 distinct values: every one is a cache miss
BITS = list(range(2, 17))


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def rerun_times(model: str) -> list[dict]:
    """Per slider: ms of each AppTest rerun after one slider change."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="x_model").set_value(model).run()
    rows = []
    layers = at.multiselect(key=f"x_layers_{model}").value
    if layers:  # pruning needs a non-classifier Linear/Conv2d layer (digits-lstm has none)
        at.radio(key=f"x_prune_{model}").set_value("unstructured (weights)").run()
        slider = "x_amount_unstructured (weights)"
        times = []
        for v in SPARSITIES:
            t0 = time.perf_counter()
            at.slider(key=slider).set_value(v).run()
            times.append((time.perf_counter() - t0) * 1e3)
            assert not at.exception and not at.error, (model, v, [e.value for e in at.error])
        # the same values again: cached results, only the page is rebuilt
        cached = []
        for v in SPARSITIES[::3]:
            t0 = time.perf_counter()
            at.slider(key=slider).set_value(v).run()
            cached.append((time.perf_counter() - t0) * 1e3)
        rows.append(_row(model, "sparsity (unstructured)", times, cached))
        at.radio(key=f"x_prune_{model}").set_value("none").run()
    if "simulated n-bit (fake quant)" in at.selectbox(key="x_quant").options and layers:
        at.selectbox(key="x_quant").set_value("simulated n-bit (fake quant)").run()
        times = []
        for b in BITS:
            t0 = time.perf_counter()
            at.slider(key="x_bits").set_value(b).run()
            times.append((time.perf_counter() - t0) * 1e3)
            assert not at.exception and not at.error, (model, b, [e.value for e in at.error])
        rows.append(_row(model, "bits (fake quant)", times, None))
    if "int8 dynamic (real)" in at.selectbox(key="x_quant").options:
        times = []
        for q in ["int8 dynamic (real)", "none"] * 3:
            t0 = time.perf_counter()
            at.selectbox(key="x_quant").set_value(q).run()
            times.append((time.perf_counter() - t0) * 1e3)
        rows.append(_row(model, "int8 dynamic on/off", times, None))
    return rows


def _row(model: str, control: str, times: list[float], cached: list[float] | None) -> dict:
    return {"model": model, "control": control, "changes": len(times), "median_ms": statistics.median(times),
            "p95_ms": _p95(times), "cached_median_ms": statistics.median(cached) if cached else None}


def page_load(repeats: int = 3) -> dict | None:
    """Seconds from navigation to the first plotly chart on the Explore page (first load: cold server caches)."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    port = free_port()
    t_server = time.perf_counter()
    proc = start_app(port)
    server_s = time.perf_counter() - t_server
    loads, stages = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            for _ in range(repeats):
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                t0 = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}")  # returns at the load event (HTML + JS bundle)
                t_html = time.perf_counter() - t0
                page.locator("h1").first.wait_for(timeout=120_000)  # the first element of the script's output
                t_title = time.perf_counter() - t0
                page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
                loads.append(time.perf_counter() - t0)
                stages.append({"load_event_s": t_html, "title_s": t_title, "first_chart_s": loads[-1]})
                page.close()
            browser.close()
    finally:
        stop(proc)
    return {"server_start_s": server_s, "first_load_s": loads[0], "warm_load_median_s": statistics.median(loads[1:]),
            "loads_s": loads, "stages": stages}


def fresh_session_ms(repeats: int = 5) -> dict:
    """Server-side time of a new session's first script run on the Explore page (process caches warm)."""
    from streamlit.testing.v1 import AppTest

    t0 = time.perf_counter()
    AppTest.from_file(APP, default_timeout=120).run()
    cold = (time.perf_counter() - t0) * 1e3
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        AppTest.from_file(APP, default_timeout=120).run()
        warm.append((time.perf_counter() - t0) * 1e3)
    return {"cold_process_ms": cold, "warm_median_ms": statistics.median(warm)}


def run(browser: bool = True) -> dict:
    import torch

    torch.set_num_threads(1)  # the dashboard runs with one intra-op thread (dashboard/app.py)
    fresh = fresh_session_ms()
    rows = [r for m in DIGITS for r in rerun_times(m)]
    return {"environment": environment(), "fresh_session": fresh, "reruns": rows,
            "page_load": page_load() if browser else None, "budget_ms": 300}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--no-browser", action="store_true", help="skip the chromium page-load timing")
    args = p.parse_args(argv)
    result = run(browser=not args.no_browser)
    text = table(result["reruns"], [
        ("model", "model", ""), ("control", "slider / control", ""), ("changes", "changes", "d"),
        ("median_ms", "median ms", ".0f"), ("p95_ms", "p95 ms", ".0f"), ("cached_median_ms", "cached median ms", ".0f"),
    ])
    text += "\n(server-side rerun after one widget change, AppTest; every change a new configuration; budget 300 ms)"
    fr = result["fresh_session"]
    text += (f"\nnew session's first run of the Explore page (server side): {fr['warm_median_ms']:.0f} ms "
             f"(first session of a fresh process, loading models and data: {fr['cold_process_ms']:.0f} ms)")
    pl = result["page_load"]
    if pl:
        text += (f"\n\npage load to first chart, headless chromium: first {pl['first_load_s']:.2f} s (cold caches), "
                 f"then median {pl['warm_load_median_s']:.2f} s; server start {pl['server_start_s']:.1f} s")
        for i, st_ in enumerate(pl["stages"]):
            text += (f"\n  load {i + 1}: load event {st_['load_event_s']:.2f} s, title {st_['title_s']:.2f} s, "
                     f"first chart {st_['first_chart_s']:.2f} s")
    emit(result, args.json, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
