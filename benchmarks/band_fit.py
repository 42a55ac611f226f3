"""How narrow can the estimate's error band be? The band Explore states beside an estimated metric, judged as issue
23 judges it (>= 80 % of random configurations inside a median band no wider than twice the median error).

    python -m benchmarks.band_fit [--model minilm-topics] [--n 50] [--extra 24] [--draws 200] [--json]

The model's curves are computed as Explore computes them (its levels, on the calibration split, 1 thread); then
``--n`` random configurations are estimated and measured on the whole test split (``estimate_quality``'s, the
ones the band is judged on) and ``--extra`` others (the kind the page fits its band on). For bands of the shape
``c + k * |estimated change| ** p`` (p = 1: the page's; p = 2: one that grows faster):

- ``in_sample``: the narrowest median band holding 80 % of the judged configurations when fitted on those very
  configurations (the estimate's scale fitted on all the extra ones): the best any band of that shape could do
  for that estimate, a bound, not a band the page could state;
- ``fitted``: fitted the page's way (scale and ``fit_band`` with leave-one-out) on ``--draws`` random draws of 10
  and 16 of the extra configurations, and on all of them, then judged: the median share inside, median band,
  median error, and the share of draws meeting both goals.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import sample_models  # noqa: F401  (registers the sample workloads by name)
from compression_core import extra_metrics
from compression_core.estimate_metric import _scaled, big_curve_levels, estimate_quality, fit_scale, metric_curves
from compression_core.workload import resolve_workload

from .common import emit, environment, parser, progress, table

SHARE = 0.8


def _err(r: dict) -> float:
    return abs(r["estimate"] - r["measured"])


def _fit(rows: list[dict], p: float) -> tuple[float, float]:
    """``fit_band``'s rule for the shape ``c + k * |change| ** p``: ``c`` the median error of the smaller-change
    half, ``k`` the 80 % quantile of the rest per unit of ``|change| ** p``."""
    by = sorted(rows, key=lambda r: abs(r["change"]))
    small = sorted(_err(r) for r in by[: max(1, len(rows) // 2)])
    c = small[len(small) // 2]
    ks = sorted(max(0.0, _err(r) - c) / max(abs(r["change"]) ** p, 1e-12) for r in rows)
    return c, ks[min(len(ks) - 1, math.ceil(SHARE * len(ks)) - 1)]


def _judge(rows: list[dict], c: float, k: float, p: float) -> tuple[float, float, float]:
    """(share inside, median half-width, median error) of ``rows`` under the band ``c + k * |change| ** p``."""
    widths = [c + k * abs(r["change"]) ** p for r in rows]
    inside = sum(_err(r) <= w + 1e-12 for r, w in zip(rows, widths)) / len(rows)
    return inside, sorted(widths)[len(widths) // 2], statistics.median(_err(r) for r in rows)


def in_sample(rows: list[dict], p: float, steps: int = 400) -> dict:
    """The narrowest median band of the shape holding SHARE of ``rows``, fitted on ``rows`` (``c`` on a grid)."""
    top = max(_err(r) for r in rows)
    best = None
    for i in range(steps + 1):
        c = top * i / steps
        ks = sorted(max(0.0, _err(r) - c) / max(abs(r["change"]) ** p, 1e-12) for r in rows)
        k = ks[min(len(ks) - 1, math.ceil(SHARE * len(ks)) - 1)]
        inside, band, err = _judge(rows, c, k, p)
        if best is None or band < best["median_band"]:
            best = {"median_band": band, "inside": inside, "median_abs_error": err, "c": c, "k": k}
    return best


def fitted(extra: list[dict], judged: list[dict], p: float, size: int, draws: int, seed: int = 0) -> dict:
    """The page's fit (scale, then the band on leave-one-out rows) on ``draws`` draws of ``size`` extra rows (all of
    them once when ``size`` is their number), judged on ``judged``."""
    rng = random.Random(seed)
    out = []
    for _ in range(draws if size < len(extra) else 1):
        rows = rng.sample(extra, size) if size < len(extra) else extra
        a = fit_scale(rows)
        loo = [_scaled(r, fit_scale(rows[:i] + rows[i + 1:]), False) for i, r in enumerate(rows)]
        out.append(_judge([_scaled(r, a, False) for r in judged], *_fit(loo, p), p))
    return {"draws": len(out), "inside": statistics.median(x[0] for x in out),
            "inside_min": min(x[0] for x in out), "median_band": statistics.median(x[1] for x in out),
            "median_abs_error": statistics.median(x[2] for x in out),
            "both_goals_met": sum(i >= SHARE and b <= 2 * e for i, b, e in out) / len(out)}


def run(model: str, n: int, extra_n: int, draws: int) -> dict[str, Any]:
    wl = resolve_workload(model)
    big = extra_metrics.preview_items(wl) is not None
    progress(f"{model}: curves")
    curves = metric_curves(wl.model, wl, levels=big_curve_levels(wl.model) if big else None, check=0, threads=1)
    if curves.ratio:
        raise SystemExit(f"{model}: a ratio-combined metric (perplexity) is not handled by this analysis")
    raw = curves.model_copy(update={"scale": 1.0})  # unscaled estimates: each fit scales them itself
    progress(f"{model}: {n} judged configurations")
    judged = estimate_quality(wl, n=n, seed=0, curves=raw)
    progress(f"{model}: {extra_n} extra configurations")
    extra = estimate_quality(wl, n=extra_n, seed=998, curves=raw)  # _quality's seed 999: other configurations
    unit = 100.0 if judged.get("percent", True) else 1.0
    rows = []
    a_extra = fit_scale(extra["rows"])  # the estimator fixed (its scale fitted on the extra ones): the band alone
    for p in (1.0, 2.0):
        best = in_sample([_scaled(r, a_extra, False) for r in judged["rows"]], p)
        rows.append({"shape": f"c + k*|change|^{p:g}", "fit": "in-sample (bound)", **best, "both_goals_met": None})
        for size in (10, 16, len(extra["rows"])):
            f = fitted(extra["rows"], judged["rows"], p, size, draws)
            rows.append({"shape": f"c + k*|change|^{p:g}", "fit": f"{size} extra x {f['draws']}", **f})
    for r in rows:
        for k in ("median_band", "median_abs_error"):  # (c and k stay in the metric's units)
            if r.get(k) is not None:
                r[k] *= unit
    return {"environment": environment(), "model": model, "judged": judged["n"], "extra": extra["n"],
            "units": "points" if unit == 100 else "metric units", "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm-topics")
    p.add_argument("--n", type=int, default=50, help="configurations the band is judged on")
    p.add_argument("--extra", type=int, default=24, help="other configurations fits are drawn from")
    p.add_argument("--draws", type=int, default=200)
    args = p.parse_args(argv)
    r = run(args.model, args.n, args.extra, args.draws)
    text = table(r["rows"], [("shape", "band", "s"), ("fit", "fitted on", "s"), ("inside", "inside", ".2f"),
                             ("median_band", "median band", ".2f"), ("median_abs_error", "median error", ".2f"),
                             ("both_goals_met", "both goals met", ".0%")])
    emit(r, args.json, f"{r['model']}: {r['judged']} judged, {r['extra']} extra configurations ({r['units']})\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
