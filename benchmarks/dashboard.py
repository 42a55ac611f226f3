"""Dashboard responsiveness as a person feels it: slider move to chart updated, and page load to first chart,
measured in headless chromium against `streamlit run`; plus the server's share of it.

    python -m benchmarks.dashboard [--json] [--no-browser] [--moves 10] [--compare-with DIR]

Browser (Debian's chromium, Playwright): the Explore page on digits-cnn at 1400x900, unstructured pruning picked,
then the sparsity slider moved one step at a time with the keyboard. Each move is timed from the key press to the
moment the size chart shows the new numbers (its sparse-file bar changes with every step) (polled every animation frame), first over values never seen (every
move a new configuration: the library applies and measures it), then back over the same values (cached results).
The websocket frames of each move are timed too: the first and last frame the server sent after the key press
(server work and transfer) vs the chart update (the rest is the browser: React and plotly.js redrawing). Page load:
navigation to the first plotly chart, for the first visitor of a fresh server (cold caches) and then warm.

Server side (no browser): Streamlit's AppTest reruns after one widget change on each digits model.

``--compare-with DIR`` runs the same browser measurement against another checkout (e.g. an older commit unpacked
with `git archive`), in the same run, so the two are compared on the same machine at the same time.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from .common import emit, environment, parser, table
from .local_app import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, start_app, stop

APP = str(ROOT / "dashboard" / "app.py")
DIGITS = ["digits-mlp", "digits-cnn", "digits-vit", "digits-lstm"]
PRUNE_LABEL = "unstructured (weights)"
AMOUNT_KEY = "x_prune_unstructured_amount"
SPARSITIES = [round(0.05 * i, 2) for i in range(1, 20)]  # 19 distinct values: every one is a cache miss
BITS = list(range(2, 17))
IDLE = "!document.querySelector('[data-testid=\"stStatusWidget\"]')"
SLIDER = "[data-testid=stSlider] input[type=range], [data-testid=stSlider] [role=slider]"
CHART = "[data-testid=stVegaLiteChart], .js-plotly-plot"  # Vega-Lite (SVG) or plotly charts, in page order
GOALS = {"slider_to_chart_median_ms": 300, "warm_first_chart_s": 1.5}


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def _log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- browser
def _summary(times: list[float]) -> dict:
    return {"n": len(times), "median_ms": statistics.median(times), "max_ms": max(times), "min_ms": min(times),
            "all_ms": [round(t, 1) for t in times]}


def browser(root: Path | str = ROOT, moves: int = 10, loads: int = 3) -> dict | None:
    """Page load and slider-to-chart times in headless chromium against ``root``'s dashboard."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    port = free_port()
    t_server = time.perf_counter()
    proc = start_app(port, timeout=120, root=root)
    server_start_s = time.perf_counter() - t_server
    url = f"http://127.0.0.1:{port}"
    frames: list[float] = []
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            load_s = []
            for i in range(loads):  # the first is the first visitor of a fresh server (models loaded, caches cold)
                page = b.new_page(viewport={"width": 1400, "height": 900})
                t0 = time.perf_counter()
                page.goto(url)
                page.locator(CHART).first.wait_for(timeout=180_000)
                load_s.append(time.perf_counter() - t0)
                page.wait_for_function(IDLE, timeout=120_000)
                _log(f"{root}: load {i + 1}: first chart after {load_s[-1]:.2f} s")
                if i < loads - 1:
                    page.close()
            page.on("websocket", lambda ws: ws.on("framereceived", lambda _: frames.append(time.perf_counter())))
            page.reload()
            page.locator(CHART).first.wait_for(timeout=120_000)
            page.wait_for_function(IDLE, timeout=120_000)
            page.get_by_text(PRUNE_LABEL, exact=True).click()
            page.wait_for_timeout(500)
            page.wait_for_function(IDLE, timeout=120_000)
            slider = page.locator(SLIDER).first
            slider.focus()

            def move(key: str) -> dict:
                before = page.locator(CHART).nth(0).text_content()
                n0 = len(frames)
                t0 = time.perf_counter()
                page.keyboard.press(key)
                page.wait_for_function("([c, t]) => document.querySelectorAll(c)[0].textContent !== t",
                                       arg=[CHART, before], timeout=60_000, polling="raf")
                chart_ms = (time.perf_counter() - t0) * 1e3
                page.wait_for_function(IDLE, timeout=60_000)
                page.wait_for_timeout(300)  # let the last frames arrive before the next move
                fr = [(t - t0) * 1e3 for t in frames[n0:] if t >= t0]
                return {"chart_ms": chart_ms, "first_frame_ms": fr[0] if fr else None,
                        "last_frame_ms": max(f for f in fr if f <= chart_ms + 1) if any(f <= chart_ms + 1 for f in fr)
                        else None}

            move("Home")  # from the slider's lowest value: up to 19 steps right, each a new configuration
            new = [move("ArrowRight") for _ in range(min(moves, len(SPARSITIES)))]
            _log(f"{root}: new values: {[round(m['chart_ms']) for m in new]} ms")
            cached = [move("ArrowLeft") for _ in range(len(new))]
            _log(f"{root}: cached values: {[round(m['chart_ms']) for m in cached]} ms")
            b.close()
    finally:
        stop(proc)

    def part(ms: list[dict]) -> dict:
        out = _summary([m["chart_ms"] for m in ms])
        last = [m["last_frame_ms"] for m in ms if m["last_frame_ms"] is not None]
        out["server_last_frame_median_ms"] = statistics.median(last) if last else None
        out["browser_after_last_frame_median_ms"] = (
            statistics.median([m["chart_ms"] - m["last_frame_ms"] for m in ms if m["last_frame_ms"] is not None])
            if last else None)
        return out

    return {"root": str(root), "server_start_s": server_start_s, "first_visitor_first_chart_s": load_s[0],
            "warm_first_chart_s": statistics.median(load_s[1:]) if len(load_s) > 1 else None, "loads_s": load_s,
            "slider_new_values": part(new), "slider_cached_values": part(cached), "viewport": "1400x900",
            "model": "digits-cnn", "control": "sparsity slider (unstructured pruning)"}


# --------------------------------------------------------------------------------------------------- server
def rerun_times(model: str) -> list[dict]:
    """Per control: ms of each AppTest rerun after one widget change (server side only)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180).run()
    at.selectbox(key="x_model").set_value(model).run()
    rows = []
    if PRUNE_LABEL in at.radio(key=f"x_prune_{model}").options:
        at.radio(key=f"x_prune_{model}").set_value(PRUNE_LABEL).run()
        times, cached = [], []
        for v in SPARSITIES:
            t0 = time.perf_counter()
            at.slider(key=AMOUNT_KEY).set_value(v).run()
            times.append((time.perf_counter() - t0) * 1e3)
            assert not at.exception and not at.error, (model, v, [e.value for e in at.error])
        for v in SPARSITIES[::3]:  # the same values again: cached results, only the page is rebuilt
            t0 = time.perf_counter()
            at.slider(key=AMOUNT_KEY).set_value(v).run()
            cached.append((time.perf_counter() - t0) * 1e3)
        rows.append(_row(model, "sparsity (unstructured)", times, cached))
        at.radio(key=f"x_prune_{model}").set_value("none").run()
    fake = "simulated n-bit (fake quant)"
    if fake in at.selectbox(key="x_quant").options:
        at.selectbox(key="x_quant").set_value(fake).run()
        times = []
        for b in BITS:
            t0 = time.perf_counter()
            at.slider(key="x_fake_quant_bits").set_value(b).run()
            times.append((time.perf_counter() - t0) * 1e3)
            assert not at.exception and not at.error, (model, b, [e.value for e in at.error])
        rows.append(_row(model, "bits (fake quant)", times, None))
    return rows


def _row(model: str, control: str, times: list[float], cached: list[float] | None) -> dict:
    return {"model": model, "control": control, "changes": len(times), "median_ms": statistics.median(times),
            "p95_ms": _p95(times), "cached_median_ms": statistics.median(cached) if cached else None}


def run(with_browser: bool = True, moves: int = 10, compare_with: str | None = None, server: bool = True) -> dict:
    import torch

    torch.set_num_threads(1)  # the dashboard runs with one intra-op thread (dashboard/app.py)
    out = {"environment": environment(), "goals": GOALS}
    if with_browser:
        out["browser"] = browser(ROOT, moves)
        if compare_with:
            out["browser_compared"] = browser(compare_with, moves)
    out["reruns"] = [r for m in DIGITS for r in rerun_times(m)] if server else []
    return out


def _browser_text(b: dict, title: str) -> str:
    n, c = b["slider_new_values"], b["slider_cached_values"]
    return (f"\n{title} ({b['root']}), chromium {b['viewport']}, {b['model']}, {b['control']}:\n"
            f"  slider move -> size chart updated: new values median {n['median_ms']:.0f} ms (max "
            f"{n['max_ms']:.0f}), cached values median {c['median_ms']:.0f} ms (max {c['max_ms']:.0f}); goal <= "
            f"{GOALS['slider_to_chart_median_ms']} ms\n"
            f"  of which the server's last frame arrived after {n['server_last_frame_median_ms'] or 0:.0f} ms "
            f"(new) / {c['server_last_frame_median_ms'] or 0:.0f} ms (cached); the browser drew for "
            f"{n['browser_after_last_frame_median_ms'] or 0:.0f} / {c['browser_after_last_frame_median_ms'] or 0:.0f}"
            f" ms after it\n"
            f"  page load -> first chart: first visitor {b['first_visitor_first_chart_s']:.2f} s, warm "
            f"{b['warm_first_chart_s'] or 0:.2f} s (goal <= {GOALS['warm_first_chart_s']} s); server start "
            f"{b['server_start_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--no-browser", action="store_true", help="skip the chromium measurements")
    p.add_argument("--no-server", action="store_true", help="skip the AppTest (server-side) reruns")
    p.add_argument("--moves", type=int, default=10, help="slider moves per direction (default 10)")
    p.add_argument("--compare-with", default=None, help="another checkout to measure the same way in this run")
    args = p.parse_args(argv)
    result = run(not args.no_browser, args.moves, args.compare_with, server=not args.no_server)
    text = ""
    if result.get("reruns"):
        text = table(result["reruns"], [
            ("model", "model", ""), ("control", "slider / control", ""), ("changes", "changes", "d"),
            ("median_ms", "median ms", ".0f"), ("p95_ms", "p95 ms", ".0f"),
            ("cached_median_ms", "cached median ms", ".0f"),
        ])
        text += "\n(server side: AppTest rerun after one widget change; every change a new configuration)"
    if result.get("browser"):
        text += _browser_text(result["browser"], "this checkout")
    if result.get("browser_compared"):
        text += _browser_text(result["browser_compared"], "compared with")
    emit(result, args.json, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
