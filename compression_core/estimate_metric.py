"""The metric of a configuration estimated before anything is applied: per-layer sensitivity curves (each layer alone
pruned, quantized or factorised to a few levels, measured once per model) combined as additive per-layer changes
interpolated at the configuration's per-layer settings, with an error band measured on random configurations.

>>> curves = metric_curves(wl.model, wl)                      # once per model (seconds to minutes; cache it)
>>> est = estimate_metric(curves, wl.model, steps, wl)        # milliseconds
>>> est.value, est.band, est.stage                            # predicted test metric, half-width, "estimate"

How a configuration is read: its per-layer settings come from ``estimate_cost`` (the exact arithmetic of the
planned model: each layer's zeros and stored bits, whatever the technique, targets and overrides), so every prune
and quantize technique the registry has is read the same way; low-rank factorisation is read from its config's
rank ratio. Each layer's change of the metric at its setting is interpolated on its curve (linearly between the
measured levels) and the changes of all layers and families are added (Distiller's and Sparsify's sensitivity
model; layers are assumed independent, which is what the measured error band pays for). A lower-is-better metric
that is positive (perplexity) combines its changes as ratios (additive in the log), others as differences.

Structured pruning is read as the zeros it leaves (an approximation: removing whole channels or heads costs more
than the same number of scattered weights; the band measured by ``estimate_quality`` includes such moves only
when asked). Steps that train, remove blocks or calibrate nothing the curves know of are not estimated (``None``
with the reason).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from functools import lru_cache
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from . import length_groups as _length_groups_module
from . import sensitivity as _sensitivity_module
from .cost import Cost, _steps, estimate_cost
from .disk_cache import source_digest
from .errors import CompressionError
from .recipe import apply_recipe
from .sensitivity import LayerCurve, intra_op_threads, layer_names, sensitivity
from .targets import classifier_name
from .technique import StepContext
from .workload import _with, as_workload, resolve_workload, workload_names

FAMILIES: tuple[str, ...] = ("prune", "lowrank", "quantize")  # the order steps are applied in
CURVE_LEVELS: dict[str, tuple] = {"prune": (0.3, 0.5, 0.7, 0.9), "quantize": (8, 6, 4, 3, 2),
                                  "lowrank": (0.5, 0.25, 0.1, 0.05)}
# a big model's curves (one Explore previews first: over ``extra_metrics.PREVIEW_PARAMS``), up to HUGE_PARAMS: low
# sparsities and bit widths where the curves bend (on minilm-topics, against 50 random configurations measured on the
# test set: (0.3, 0.6, 0.9) x (8, 4, 2) erred 4.3 points at the median, these 1.2; linear interpolation from 0 to 0.3
# sparsity spread one layer's calibration noise over the range most moves use); over HUGE_PARAMS 3 levels each, so
# the curves take minutes, not an hour. The dashboard and benchmarks.live use the same levels (``big_curve_levels``)
MID_CURVE_LEVELS: dict[str, tuple] = {"prune": (0.2, 0.4, 0.6, 0.8, 0.9, 0.95), "quantize": (6, 5, 4, 3, 2),
                                      "lowrank": (0.5, 0.25, 0.1)}
BIG_CURVE_LEVELS: dict[str, tuple] = {"prune": (0.3, 0.6, 0.9), "quantize": (8, 4, 2), "lowrank": (0.5, 0.25, 0.1)}
HUGE_PARAMS = 64_000_000
# random configurations a band is fitted on (each measured on the whole test split): a small model's are cheap
BAND_CHECKS = {"small": 24, "big": 10}
VERSION = 3  # of the curves' meaning (2: the band grows with the estimated change; 3: a fitted scale): part of every cache key built from them (with ``curves_code()``)


def big_curve_levels(model: nn.Module) -> dict[str, tuple]:
    """The curves' levels for a model Explore previews first: MID_CURVE_LEVELS up to HUGE_PARAMS parameters,
    BIG_CURVE_LEVELS over it."""
    return BIG_CURVE_LEVELS if sum(p.numel() for p in model.parameters()) > HUGE_PARAMS else MID_CURVE_LEVELS


@lru_cache(maxsize=1)
def curves_code() -> str:
    """The code version of curves: a digest of the source that computes them (this file, sensitivity and its length
    groups, the techniques' weight transforms), for cache keys. Read once per process (a page asks for it on every rerun;
    the source does not change under a running server)."""
    return source_digest(__file__, _sensitivity_module, _length_groups_module)

# Step kinds whose effect the curves describe (read per layer from estimate_cost's rows, or the config: lowrank)
_PRUNES = {"prune_unstructured", "prune_threshold", "prune_structured", "shrink"}
_QUANTS = {"quantize_dynamic", "quantize_static", "quantize_int4", "quantize_weight_only", "quantize_embedding",
           "quantize_half", "fake_quant"}
ESTIMATED_KINDS = frozenset(_PRUNES | _QUANTS | {"lowrank"})


class MetricCurves(BaseModel):
    """Per-layer curves of one model, per family (``sensitivity`` results), on one split, with the band measured on
    random configurations of the test split: a configuration's band is ``band + band_slope * |estimated change|``
    (an estimate of a large change errs more than one of a small change), and it held ``band_share`` of them.
    ``scale``: the summed per-layer change is multiplied by it, a factor fitted on those configurations (least
    squares through the origin of the measured change on the summed one; 1 before the band is measured)."""

    @property
    def ratio(self) -> bool:
        """Whether changes combine as ratios (additive in the log): a positive lower-is-better metric (perplexity)."""
        return not self.higher_is_better and self.baseline > 0

    def band_for(self, change: float | None) -> float | None:
        """The band's half-width for an estimated change (metric units; log-ratio for a lower-is-better one)."""
        if self.band is None:
            return None
        return self.band + self.band_slope * abs(change or 0.0)

    model: str
    split: str  # what the curves were measured on, in words ("the calibration split (74 items)")
    samples: int
    metric: str
    higher_is_better: bool = True
    percent: bool = True
    baseline: float  # the metric of the unchanged model on the split
    curves: dict[str, list[LayerCurve]]
    band: float | None = None  # the band's half-width at no change (metric units)
    band_slope: float = 0.0  # ... plus this much per unit of estimated change: the error grows with the change
    scale: float = 1.0  # the summed change's calibration factor (fitted with the band)
    band_share: float | None = None
    band_checks: int = 0
    median_abs_error: float | None = None
    seconds: float = 0.0
    version: int = VERSION


class MetricEstimate(BaseModel):
    """A predicted metric (``value``, None when it cannot be estimated: ``reason``) with its band half-width."""

    value: float | None
    band: float | None = None
    baseline: float | None = None  # the baseline the change was added to (the test metric)
    change: float | None = None
    reason: str = ""
    layers: dict[str, float] = Field(default_factory=dict)  # layer -> its change (metric units)
    stage: str = "estimate"


# ------------------------------------------------------------------------------------------------ curves
def _split_data(wl, split: str | int):
    """(workload whose ``calib`` is the split to measure on, its description)."""
    if split == "calib":
        return wl, f"the calibration split ({len(wl.calib)} items)"
    n = int(split)
    return _with(wl, calib=wl.test.take(slice(0, n))), f"the preview subset (first {n} test items)"


def metric_curves(model: nn.Module, workload: Any, families: tuple[str, ...] | list[str] = FAMILIES,
                  levels: dict[str, tuple] | None = None, split: str | int = "calib", check: int = BAND_CHECKS["small"],
                  seed: int = 0, progress=None, threads: int | None = 1,
                  targets: list[str] | None = None, workers: int = 1) -> MetricCurves:
    """Sensitivity curves of every layer (classifier included) for each family, on ``split`` ("calib", or an int n:
    the first n test items), then ``check`` random configurations (other than ``estimate_quality``'s) measured on
    the whole test split against their estimate, giving the band the page states: the 80th percentile of the
    absolute errors (the estimate predicts the test metric, so that is where its error is measured). ``targets``:
    only these layers (a big model's curves are computed in parts, one job each, and merged). ``workers``: the
    sweeps' evaluation threads (``sensitivity``: the same points, faster where cores are free)."""
    wl = as_workload(workload, model)
    data, where = _split_data(wl, split)
    t0 = time.perf_counter()
    curves: dict[str, list[LayerCurve]] = {}
    base = None
    fams = list(families)
    for i, fam in enumerate(fams):
        lv = (levels or {}).get(fam, CURVE_LEVELS[fam])

        def prog(f, msg, i=i, fam=fam):
            if progress is not None:
                progress((i + f) / (len(fams) + (1 if check else 0)), f"{fam}: {msg}")
        try:
            mine = None
            if targets is not None:
                mine = [t for t in targets if t in set(layer_names(model, fam, None, include_classifier=True))]
                if not mine:
                    continue
            s = sensitivity(model, data, fam, levels=lv, include_classifier=True, heads=False, name=wl.name,
                            progress=prog, threads=threads, targets=mine, workers=workers)
        except CompressionError:  # e.g. no layer lowrank can factorise: that family is not estimated
            continue
        base = s.baseline_accuracy
        curves[fam] = s.layers
    if base is None:
        raise CompressionError("curves: no layer of this model can be swept (no Linear, Conv2d or LSTM layer)")
    metric = getattr(wl, "metric", None)
    out = MetricCurves(model=wl.name, split=where, samples=len(data.calib), metric=getattr(wl, "metric_name", "metric"),
                       higher_is_better=bool(getattr(metric, "higher_is_better", True)),
                       percent=bool(getattr(metric, "percent", True)), baseline=base, curves=curves)
    if check:
        if progress is not None:
            progress(len(fams) / (len(fams) + 1), f"checking the estimate on {check} random configurations")
        out = measure_band(model, wl, out, check, seed, threads=threads)
    return out.model_copy(update={"seconds": time.perf_counter() - t0})


def measure_band(model: nn.Module, workload: Any, curves: MetricCurves, n: int = 12, seed: int = 0,
                 threads: int | None = 1) -> MetricCurves:
    """``curves`` with their band measured: ``n`` random configurations (other than ``estimate_quality``'s for the
    same seed) estimated and measured on the whole test split; the band is the 80th percentile of the absolute
    errors (the estimate predicts the test metric, so that is where its error is measured)."""
    wl = as_workload(workload, model)
    with intra_op_threads(threads):
        q = _quality(model, wl, curves.model_copy(update={"scale": 1.0}), n, seed + 1000, on="test")
    ratio = curves.ratio
    rows = q["rows"]
    scale = fit_scale(rows, ratio)
    # the band from each configuration's error with the scale fitted on the OTHER ones (leave one out), so it is
    # not fitted on what it is then measured on
    loo = [_scaled(r, fit_scale(rows[:i] + rows[i + 1:], ratio), ratio) for i, r in enumerate(rows)]
    c, k = fit_band(loo)
    share = (sum(abs(r["estimate"] - r["measured"]) <= c + k * abs(r["change"]) + 1e-12 for r in loo) /
             len(loo)) if loo else None
    med = statistics.median(abs(r["estimate"] - r["measured"]) for r in loo) if loo else None
    return curves.model_copy(update={"band": c, "band_slope": k, "band_share": share, "band_checks": q["n"],
                                     "median_abs_error": med, "scale": scale})


# the scale is clamped to this range: it corrects a sum that overstates the change (the noise bias below); a factor
# over 1 fitted on 10-24 configurations was fitting their noise (mnist-lenet300: 2.0, median error 0.18 -> 0.34 points)
SCALE_RANGE = (0.2, 1.0)


def _log_change(r: dict) -> tuple[float, float]:
    base = r["estimate"] - r["change"]
    return (math.log(max(r["estimate"], 1e-12) / base), math.log(max(r["measured"], 1e-12) / base))


def fit_scale(rows: list[dict], ratio: bool = False) -> float:
    """The factor ``a`` that best maps the summed change of ``rows`` (each with ``estimate``, ``measured`` and
    ``change``, the estimate's change from the baseline) to the measured one: least squares through the origin, in
    the log for a ratio-combined metric (perplexity); 1 when no row changes anything; clamped to SCALE_RANGE.

    Why: the per-layer changes, each measured on a small split, carry noise that the monotone fit turns into a
    bias (a layer is never better than the baseline), and their sum adds it up over dozens of layers; layers also
    interact. On minilm-topics the fitted factor is ~0.7: the additive sum overstates the drop."""
    pairs = [_log_change(r) if ratio else (r["change"], r["measured"] - (r["estimate"] - r["change"])) for r in rows]
    den = sum(t * t for t, _ in pairs)
    if den <= 0:
        return 1.0
    a = sum(t * m for t, m in pairs) / den
    return min(max(a, SCALE_RANGE[0]), SCALE_RANGE[1])


def _scaled(r: dict, a: float, ratio: bool) -> dict:
    """Row ``r`` with its estimate's change multiplied by ``a`` (in the log when ``ratio``)."""
    base = r["estimate"] - r["change"]
    value = base * math.exp(a * _log_change(r)[0]) if ratio else base + a * r["change"]
    return {**r, "estimate": value, "change": value - base}


def fit_band(rows: list[dict], share: float = 0.8) -> tuple[float | None, float]:
    """(c, k) of a band ``c + k * |estimated change|`` holding ``share`` of ``rows`` (each with ``estimate``,
    ``measured`` and ``change``): ``c`` the median error of the configurations estimated to change the metric least
    (the smaller half), ``k`` the ``share`` quantile of the rest of each error per unit of estimated change. A
    single half-width for all would be too wide for small moves and too narrow for large ones."""
    if not rows:
        return None, 0.0
    by_change = sorted(rows, key=lambda r: abs(r["change"]))
    small = [abs(r["estimate"] - r["measured"]) for r in by_change[: max(1, len(rows) // 2)]]
    c = sorted(small)[len(small) // 2]
    ks = sorted(max(0.0, abs(r["estimate"] - r["measured"]) - c) / max(abs(r["change"]), 1e-9) for r in rows)
    return c, ks[min(len(ks) - 1, math.ceil(share * len(ks)) - 1)]


def merge_curves(parts: list[MetricCurves]) -> MetricCurves:
    """One MetricCurves from several computed separately (families, or parts of a family's layers, on the same
    split)."""
    if not parts:
        raise CompressionError("curves: nothing to merge")
    curves: dict[str, list[LayerCurve]] = {}
    for p in parts:
        for fam, cs in p.curves.items():
            have = {c.name for c in curves.get(fam, [])}
            curves.setdefault(fam, []).extend(c for c in cs if c.name not in have)
    return parts[0].model_copy(update={"curves": curves, "seconds": sum(p.seconds for p in parts)})


# ------------------------------------------------------------------------------------------------ estimate
def _interp(points: list[tuple[float, float]], x: float) -> float:
    """Linear interpolation on sorted (level, value) points, clamped at the ends."""
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return pts[-1][1]


def _monotone(pts: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The closest monotone curve (pool adjacent violators: a layer compressed further never helps): a gain measured
    on a small calibration split is noise, and it is averaged with its neighbours rather than dropped (taking the
    running minimum instead biased every layer down, and the bias added up over dozens of layers)."""
    blocks: list[list[float]] = []  # [mean, count], kept non-increasing (non-decreasing when lower is better)
    for _, m in pts:
        blocks.append([m if higher_is_better else -m, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            y2, n2 = blocks.pop()
            y1, n1 = blocks.pop()
            blocks.append([(y1 * n1 + y2 * n2) / (n1 + n2), n1 + n2])
    top = pts[0][1] if higher_is_better else -pts[0][1]  # the uncompressed point (the baseline): never exceeded
    fit = [min(y, top) for y, n in blocks for _ in range(int(n))]
    return [(x, f if higher_is_better else -f) for (x, _), f in zip(pts, fit)]


def _base_rows(model: nn.Module, wl) -> dict:
    return {r.name: r for r in estimate_cost(model, [], wl).layers}


def _lowrank_levels(steps, names: list[str]) -> dict[str, float] | str:
    """Per-layer rank ratios of the lowrank steps (a layer they factorise), or a reason they cannot be read."""
    out: dict[str, float] = {}
    for s in steps:
        if getattr(s, "kind", None) != "lowrank":
            continue
        if s.energy or getattr(s, "param_ratio", None):
            return "lowrank by energy or parameter ratio: the rank is known only after the SVD"
        for n in names:
            out[n] = float(s.overrides.get(n, s.rank_ratio)) if getattr(s, "overrides", None) else float(s.rank_ratio)
    return out


def _as_configs(steps) -> list:
    return [c for c, _ in _steps(steps, 0)]


def estimate_metric(curves: MetricCurves, model: nn.Module, steps: Any, workload: Any, *,
                    baseline: float | None = None, band: float | None = None, cost: Cost | None = None,
                    base_rows: dict | None = None) -> MetricEstimate:
    """The predicted test metric of ``model`` after ``steps`` (a recipe, its dict, step configs or dicts), from
    ``curves``: the workload's test baseline (or ``baseline``) plus each layer's change at its setting. ``band``
    overrides the curves' measured half-width. ``cost``/``base_rows``: already computed (the page has them)."""
    wl = as_workload(workload, model)
    configs = _as_configs(steps)
    bad = [c.kind for c in configs if c.kind not in ESTIMATED_KINDS]
    if bad:
        return MetricEstimate(value=None, reason=f"{bad[0]} is not estimated from sensitivity curves")
    if baseline is None:
        baseline = float(wl.score(model, "test"))
    if not configs:
        return MetricEstimate(value=baseline, band=0.0, baseline=baseline, change=0.0)
    lowrank = [c for c in configs if c.kind == "lowrank"]
    rest = [c for c in configs if c.kind != "lowrank"]
    if lowrank:  # its factors rename the layer: zeros and bits are read without it, its rank from its config
        cost = estimate_cost(model, rest, wl)
    else:
        cost = cost or estimate_cost(model, configs, wl)
    if cost.refused:
        return MetricEstimate(value=None, reason=cost.refused)
    if not cost.layers or cost.nonzero_params is None and any(c.kind in _PRUNES for c in rest):
        return MetricEstimate(value=None, reason=next(iter(cost.unknown.values()), "per-layer settings unknown"))
    base_rows = base_rows if base_rows is not None else _base_rows(model, wl)
    rows = {r.name: r for r in cost.layers}
    ratio = curves.ratio
    b0 = curves.baseline
    changes: dict[str, float] = {}

    def add(name: str, fam: str, level: float) -> None:
        c = next((c for c in curves.curves.get(fam, []) if c.name == name), None)
        if c is None:
            return
        zero = {"prune": 0.0, "quantize": 32, "lowrank": 1.0}[fam]
        pts = [(float(lv), float(m)) for lv, m in c.points] + [(zero, b0)]
        if fam == "quantize":
            if level >= 9:  # 16-bit floats and 9+ bit integers: no measurable change at the curves' resolution
                return
            pts = [(-b, m) for b, m in pts]  # fewer bits = further along
            level = -level
        if fam == "lowrank":
            pts = [(-r, m) for r, m in pts]  # a lower rank = further along
            level = -level
        pts = _monotone(sorted(pts), curves.higher_is_better)
        m = _interp(pts, level)
        d = (math.log(max(m, 1e-12)) - math.log(b0)) if ratio else (m - b0)
        changes[name] = changes.get(name, 0.0) + d

    if lowrank:
        if "lowrank" not in curves.curves:
            return MetricEstimate(value=None, reason="no low-rank curves for this model")
        lr_cost = estimate_cost(model, lowrank, wl)
        if lr_cost.refused or not lr_cost.layers:
            return MetricEstimate(value=None, reason=lr_cost.refused or "low-rank layers unknown")
        lr_rows = {r.name for r in lr_cost.layers}
        lr = _lowrank_levels(lowrank, [n for n in base_rows if n not in lr_rows and f"{n}.0" in lr_rows])
        if isinstance(lr, str):
            return MetricEstimate(value=None, reason=lr)
        for name, level in lr.items():
            add(name, "lowrank", level)
    for name, b in base_rows.items():
        r = rows.get(name)
        if r is None:
            continue
        curve = next((c for c in curves.curves.get("prune", []) if c.name == name), None)
        if curve is not None and r.nonzero is not None and b.nonzero is not None and b.nonzero > r.nonzero:
            add(name, "prune", min((b.nonzero - r.nonzero) / max(curve.params, 1), 0.999))
        if r.bits < 32:
            add(name, "quantize", r.bits)
    total = sum(changes.values())
    floor = min((float(m) for cs in curves.curves.values() for c in cs for _, m in c.points), default=None)
    if ratio:
        value = baseline * math.exp(curves.scale * total)
    else:
        value = baseline + total
        if curves.higher_is_better and floor is not None:
            value = max(value, min(floor, baseline))  # no worse than a layer alone at its worst (chance level)
        value = baseline + curves.scale * (value - baseline)  # the fitted calibration of the sum (see fit_scale)
        if curves.percent:
            value = min(max(value, 0.0), 1.0)
    return MetricEstimate(value=value, band=curves.band_for(value - baseline) if band is None else band,
                          baseline=baseline, change=value - baseline, layers=changes)


# ------------------------------------------------------------------------------------------------ quality
def random_configs(model: nn.Module, workload: Any, n: int, seed: int = 0,
                   families: tuple[str, ...] = FAMILIES) -> list[list[dict]]:
    """``n`` random configurations (step dicts): one to three families combined, each setting uniform over its
    control's range, on a random subset of several layers (at least two where the model has them)."""
    wl = as_workload(workload, model)
    cls = classifier_name(model, StepContext(data=wl))
    rng = random.Random(seed)
    layers = {f: _safe_layers(model, f, cls) for f in families}
    fams = [f for f in FAMILIES if f in families and layers[f]]  # the order steps are applied in, whatever given
    out = []
    for _ in range(n):
        k = rng.randint(1, min(3, len(fams)))
        picked = sorted(rng.sample(fams, k), key=fams.index)
        steps: list[dict] = []
        for fam in picked:  # applied in the order prune, lowrank, quantize
            names = layers[fam]
            m = rng.randint(min(2, len(names)), len(names))
            targets = sorted(rng.sample(names, m), key=names.index)
            if fam == "prune":
                steps.append({"kind": "prune_unstructured", "amount": round(rng.uniform(0.0, 0.95), 3),
                              "targets": targets})
            elif fam == "lowrank":
                steps.append({"kind": "lowrank", "rank_ratio": round(rng.uniform(0.05, 1.0), 3),
                              "targets": targets})
            else:  # a factorised layer is not quantized (the library refuses it)
                factorised = {t for s in steps if s["kind"] == "lowrank" for t in s["targets"]}
                targets = [t for t in targets if t not in factorised]
                if targets:
                    steps.append({"kind": "fake_quant", "bits": rng.randint(2, 8), "targets": targets})
        out.append(steps)
    return out


def _safe_layers(model, fam, cls) -> list[str]:
    try:
        names = layer_names(model, fam, cls, include_classifier=True)
    except CompressionError:
        return []
    if fam == "quantize":  # fake_quant acts on Linear/Conv layers
        names = [n for n in names if isinstance(model.get_submodule(n), (nn.Linear, nn.Conv2d))]
    return names


def _quality(model, data, curves: MetricCurves, n: int, seed: int, on: str) -> dict:
    """Estimate vs measurement of ``n`` random configurations on ``data``'s split ``on`` ("calib" or "test")."""
    fams = tuple(curves.curves)
    configs = random_configs(model, data, n, seed, fams)
    base_rows = _base_rows(model, data)
    baseline = float(data.score(model, on))
    # the recipe's model field: the workload is given, so it is never resolved; an in-memory workload (not
    # registered, no reference) still needs a name the recipe schema accepts
    ref = getattr(data, "reference", None) or (curves.model if curves.model in workload_names()
                                                 else f"{curves.model}:in-memory")
    errors, rows = [], []
    for steps in configs:
        est = estimate_metric(curves, model, steps, data, baseline=baseline, base_rows=base_rows)
        if est.value is None:
            continue
        try:
            after = apply_recipe({"version": 1, "model": ref, "steps": steps}, workload=data,
                                 with_latency=False, measure_before=False, measure_after=False).model
        except CompressionError:  # a configuration the library refuses (the estimate said so too, mostly)
            continue
        measured = float(data.score(after, on))
        errors.append(abs(est.value - measured))
        rows.append({"steps": steps, "estimate": est.value, "measured": measured, "change": est.value - baseline})
    if not errors:
        return {"n": 0, "median_abs_error": None, "band": None, "inside_band": None, "rows": rows}
    e = sorted(errors)
    med = statistics.median(e)
    band = e[min(len(e) - 1, math.ceil(0.8 * len(e)) - 1)]  # the half-width that held 80 % of them
    return {"n": len(e), "median_abs_error": med, "band": band,
            "inside_band": sum(x <= band + 1e-12 for x in e) / len(e), "rows": rows}


def estimate_quality(workload: Any, n: int = 50, seed: int = 0, curves: MetricCurves | None = None,
                     band: float | None = None, threads: int | None = 1, levels: dict[str, tuple] | None = None,
                     check: int = BAND_CHECKS["small"]) -> dict:
    """How good the estimate is on ``workload`` (a Workload or reference): ``n`` random configurations (see
    ``random_configs``) estimated from ``curves`` (computed here on the calibration split when not given) and
    measured on the whole test split. Returns {n, median_abs_error, inside_band (share whose measurement is within
    the band stated for it: ``band + band_slope * |estimated change|``, or ``band`` when given), band and
    band_slope, median_band (the median stated half-width), band_80 (the one half-width that would hold 80 %),
    higher_is_better, percent, rows}. Errors are in the metric's own units (fractions for accuracy). ``levels``
    and ``check``: the curves' levels per family and how many random configurations their band is measured on
    (when the curves are computed here; Explore uses ``BIG_CURVE_LEVELS`` and ``BAND_CHECKS['big']`` for a big model)."""
    wl = resolve_workload(workload) if isinstance(workload, str) else workload
    if curves is None:
        curves = metric_curves(wl.model, wl, levels=levels, check=check, threads=threads, seed=seed)
    with intra_op_threads(threads):
        q = _quality(wl.model, wl, curves, n, seed + 1, on="test")
    stated = [curves.band_for(r["change"]) if band is None else band for r in q["rows"]]
    inside = (sum(abs(r["estimate"] - r["measured"]) <= b + 1e-12 for r, b in zip(q["rows"], stated)) /
              len(stated)) if stated and None not in stated else None
    widths = sorted(stated) if stated and None not in stated else []
    return {"model": curves.model, "n": q["n"], "median_abs_error": q["median_abs_error"],
            "band": curves.band if band is None else band, "band_slope": curves.band_slope if band is None else 0.0,
            "scale": curves.scale,
            "median_band": widths[len(widths) // 2] if widths else None,
            "inside_band": inside, "band_80": q["band"], "higher_is_better": curves.higher_is_better,
            "percent": curves.percent, "curves_split": curves.split, "rows": q["rows"]}


__all__ = ["BAND_CHECKS", "BIG_CURVE_LEVELS", "CURVE_LEVELS", "ESTIMATED_KINDS", "FAMILIES", "HUGE_PARAMS",
           "MID_CURVE_LEVELS", "MetricCurves", "MetricEstimate", "big_curve_levels", "curves_code", "estimate_metric",
           "estimate_quality", "fit_scale", "measure_band", "merge_curves", "metric_curves", "random_configs"]
