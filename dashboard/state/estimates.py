"""Explore's first stage, before anything runs: a configuration's size, parameters and FLOPs computed exactly
(``compression_core.estimate_cost``) and its metric estimated from per-layer sensitivity curves
(``compression_core.estimate_metric``).

The curves are computed by background jobs (the worker pool training uses, one family at a time, then their error
band on a few random configurations), started when a model is first opened, and cached on disk by the model's
content (``compression_core.disk_cache``: kept across sessions and server restarts); until they exist the estimate
stage shows the size alone and says the estimate is being prepared. Curves are shared by every session (a model's
curves are the same for everyone); the jobs run under one server session, not a student's.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

import streamlit as st

from compression_core import CompressionError, disk_cache, estimate_cost, extra_metrics
from compression_core.estimate_metric import (BAND_CHECKS, CURVE_LEVELS, FAMILIES, VERSION, MetricCurves,
                                              big_curve_levels, curves_code, estimate_metric, merge_curves)
from compression_core.cost import Cost
from compression_core.recipe import parse_recipe
from compression_core.sensitivity import layer_names

import jobs  # dashboard/jobs: the curves are computed in worker processes

from .lru import LRU
from .workloads import baseline, one_line

CHUNK = 8  # a big model's layers per curves job (each job stays well inside the job time limit on a busy machine)
JOB_SESSION = "explore-curves"  # the jobs' session: a model's curves are everyone's
CACHE = disk_cache.DiskCache("metric-curves")


@functools.lru_cache(maxsize=256)
def _big(ref: str) -> bool:
    """A model Explore measures on a preview subset first (its curves get fewer levels). Once per process and
    model (asked a few dozen times per move; each ``baseline`` call re-checks the reference against the server's
    list)."""
    return extra_metrics.preview_items(baseline(ref)) is not None


@st.cache_data(show_spinner=False)
def model_key(ref: str) -> str:
    """The model's content digest (every tensor of its state dict): the curves' disk cache key."""
    return disk_cache.model_digest(baseline(ref).model)


@functools.lru_cache(maxsize=256)
def levels(ref: str) -> dict[str, tuple]:
    """The curves' levels: a big model's (``big_curve_levels``: fewer over 64 M parameters), else a small one's."""
    return big_curve_levels(baseline(ref).model) if _big(ref) else CURVE_LEVELS


@functools.lru_cache(maxsize=4096)
def _key(ref: str, what: str) -> str:
    """The disk cache key of one part of a model's curves (once per process and part: the model's digest, the
    levels and the curves' code do not change under a running server)."""
    return disk_cache.digest("metric-curves", VERSION, model_key(ref), what, levels(ref),
                             BAND_CHECKS["big" if _big(ref) else "small"], curves_code())


@st.cache_data(show_spinner=False)
def _layers(ref: str, fam: str) -> list[str]:
    """The layers a family's curves cover (classifier included), in model order; [] when none can be swept."""
    try:
        return layer_names(baseline(ref).model, fam, None, include_classifier=True)
    except CompressionError:
        return []


class _Curves:
    """Per process: finished curves (key -> MetricCurves), families that cannot be swept, and the job ids."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[str, MetricCurves | None] = {}  # None: this family has no layer to sweep
        self.jobs: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.final: dict[str, MetricCurves] = {}  # model -> its curves with their band, once complete


@st.cache_resource(show_spinner=False)
def _state() -> _Curves:
    return _Curves()


def _from_disk(key: str) -> MetricCurves | None | bool:
    got = CACHE.load(key)
    if got is None:
        return False
    meta = got[1]
    return None if meta.get("none") else MetricCurves.model_validate(meta["curves"])


def _to_disk(key: str, c: MetricCurves | None) -> None:
    CACHE.save(key, None, {"none": True} if c is None else {"curves": c.model_dump(mode="json")})


def _part(ref: str, what: str, payload: dict) -> tuple[bool, MetricCurves | None, str]:
    """(ready, curves, status) of one job's result: memory, then disk, else its job (submitted once)."""
    s = _state()
    key = _key(ref, what)
    with s.lock:
        if key in s.done:
            return True, s.done[key], ""
        if key in s.failed:
            return True, None, s.failed[key]
    hit = _from_disk(key)
    if hit is not False:
        with s.lock:
            s.done[key] = hit
        return True, hit, ""
    try:
        with s.lock:
            job = s.jobs.get(key)
        if job is None:
            job = jobs.runner().submit("curves", payload, JOB_SESSION)
            with s.lock:
                s.jobs[key] = job
        st_ = jobs.runner().status(job)
    except Exception as e:  # the pool refused (queue full, workers cannot start): the estimate waits, one line
        return False, None, one_line(e)
    if st_["state"] == jobs.DONE:
        c = MetricCurves.model_validate(st_["result"]["curves"])
        _to_disk(key, c)
        with s.lock:
            s.done[key] = c
        return True, c, ""
    if st_["state"] in (jobs.ERROR, jobs.CANCELLED, "unknown"):
        err = st_.get("error") or "failed"
        if what.split(":")[0] in FAMILIES and "no layer" in err:  # nothing of this family to sweep: the others still count
            _to_disk(key, None)
            with s.lock:
                s.done[key] = None
            return True, None, ""
        with s.lock:
            s.failed[key] = err
            s.jobs.pop(key, None)
        return True, None, err
    return False, None, f"{what.split(':')[0]} curves {st_['progress'] * 100:.0f} %" + (
        f" ({st_['message']})" if st_.get("message") else "")


def curves(ref: str) -> tuple[MetricCurves | None, str]:
    """(the model's curves, with their band once measured; or None) and a status line while they are prepared.
    Called on every Explore run: the first call starts the jobs (one at a time), later calls poll them."""
    s = _state()
    with s.lock:
        if ref in s.final:  # complete: nothing left to poll (a move asks on every rerun)
            return s.final[ref], ""
    parts: list[MetricCurves] = []
    lv = levels(ref)
    for fam in FAMILIES:
        names = _layers(ref, fam)
        size = CHUNK if _big(ref) else max(len(names), 1)
        chunks = [names[i:i + size] for i in range(0, len(names), size)]
        for i, chunk in enumerate(chunks):
            payload = {"model": ref, "family": fam, "levels": list(lv[fam]), "layers": chunk}
            ready, c, status = _part(ref, f"{fam}:{i}", payload)
            if not ready:
                return None, f"{status}; part {i + 1} of {len(chunks)}"
            if c is not None:  # None: failed (time limit, ...) or nothing to sweep: estimate with the others
                parts.append(c)
    if not parts:
        return None, "no sensitivity curves could be computed for this model"
    merged = merge_curves(parts)
    n = BAND_CHECKS["big" if _big(ref) else "small"]
    ready, banded, status = _part(ref, "band", {"model": ref, "band": n, "curves": merged.model_dump(mode="json")})
    if ready and banded is not None:
        with s.lock:
            s.final[ref] = banded
        return banded, ""
    return merged, ("the error band is being measured: " + status) if not ready else status


def band_error(ref: str) -> str | None:
    """Why the error band of ``ref``'s curves could not be measured (its job failed: e.g. a 110 M model's random
    configurations need more than the per-job memory or time limit), or None (measured, or still being measured)."""
    s = _state()
    with s.lock:
        return None if ref in s.final else s.failed.get(_key(ref, "band"))


def curves_status(ref: str) -> str:
    """Start (or poll) the curves of ``ref`` now (Explore calls this when a model is opened); a status line. Only
    for a model measured on a preview subset first: a small model's moves are measured at once (no estimate
    stage), so its curves would never be shown."""
    try:
        if not _big(ref):
            return ""
        return curves(ref)[1]
    except Exception as e:  # never break the page for the estimate
        return one_line(e)


# ------------------------------------------------------------------------------------------------ per move
@st.cache_data(show_spinner=False, max_entries=512)
def cost_view(key: str) -> dict:
    """``estimate_cost`` of the recipe ``key`` as a dict (sizes, parameters, FLOPs, per-layer rows; None where a
    number is known only after applying, ``unknown`` says why; ``refused`` when the library would refuse it)."""
    recipe = parse_recipe(json.loads(key))
    wl = baseline(recipe.model)
    return estimate_cost(wl.model, recipe, wl).model_dump()


@st.cache_resource(show_spinner=False)
def _base_layer_rows(ref: str) -> dict:
    wl = baseline(ref)
    return {r.name: r for r in estimate_cost(wl.model, [], wl).layers}


@st.cache_resource(show_spinner=False)
def _estimates() -> LRU:
    return LRU(size=512)


def estimate_view(key: str, base_metric: float) -> dict:
    """{"value": predicted test metric or None, "band", "split", "reason", "status", "band_error" (why the band
    could not be measured, or None)} for the recipe ``key``."""
    ref = json.loads(key)["model"]
    try:
        c, status = curves(ref)
    except Exception as e:
        return {"value": None, "band": None, "split": None, "reason": one_line(e), "status": ""}
    if c is None:
        return {"value": None, "band": None, "split": None, "reason": "", "status": status}
    k = json.dumps([key, c.band, c.scale, sorted(c.curves)])
    hit = _estimates().get(k)
    if hit is None:
        recipe = parse_recipe(json.loads(key))
        wl = baseline(ref)
        try:
            cost = Cost.model_validate(cost_view(key))  # computed once per move (also the page's size)
            est = estimate_metric(c, wl.model, recipe, wl, baseline=base_metric, base_rows=_base_layer_rows(ref),
                                  cost=cost)
            hit = {"value": est.value, "band": est.band, "split": c.split, "reason": est.reason, "status": status,
                   "checks": c.band_checks}
        except Exception as e:  # noqa: BLE001 - the estimate is a bonus: one line, the measurement follows
            hit = {"value": None, "band": None, "split": c.split, "reason": one_line(e), "status": status}
        _estimates().put(k, hit)
    # the value is kept per configuration; how far the curves' jobs are (and whether the band's failed) is now
    return {**hit, "status": status, "band_error": band_error(ref) if c.band is None else None}


def estimated_stats(key: str, bstats: dict, base_metric: float) -> tuple[dict, dict]:
    """(stats of the estimate stage in ModelStats' shape: sizes, parameters and FLOPs computed, the metric
    estimated (None when not yet), per-layer rows computed; the estimate's own view)."""
    cost = cost_view(key)
    est = estimate_view(key, base_metric)
    return with_cost({"accuracy": est["value"], "layers": layer_rows(cost, bstats)}, cost, bstats), est


def layer_rows(cost: dict, bstats: dict) -> list[dict]:
    """Per-layer rows (``LayerStats``' shape) of a computed cost, with the baseline's layer types."""
    types = {r["name"]: r for r in bstats["layers"]}
    rows = []
    for r in cost.get("layers") or []:
        b = types.get(r["name"], {})
        nz = r["nonzero"] if r["nonzero"] is not None else r["params"]
        rows.append({"name": r["name"], "type": b.get("type", ""), "params": r["params"], "nonzero": nz,
                     "sparsity": round(1 - nz / r["params"], 6) if r["params"] else 0.0,  # as measure rounds it
                     # simulated bits keep the float storage, as ``measure`` reports them
                     "dtype": b.get("dtype", "") if r["bits"] == b.get("bits") or r["simulated"] else f"{r['bits']}-bit",
                     "bits": r["bits"], "simulated": r["simulated"]})
    return rows


def with_cost(stats: dict, cost: dict, bstats: dict) -> dict:
    """``stats`` with every size, parameter and FLOP count the computed cost knows (the same numbers on every
    stage); a number the cost does not know keeps the measured one, or the baseline's shape when none is."""
    out = dict(stats)
    for k in ("size_bytes", "sparse_size_bytes", "theoretical_size_bytes", "params", "nonzero_params", "flops",
              "nonzero_flops"):
        if cost.get(k) is not None:
            out[k] = cost[k]
        elif k not in out:
            out[k] = None
    if cost.get("theoretical_size_bytes") is not None:
        out["simulated"] = True
    out.setdefault("simulated", False)
    return out


__all__ = ["CACHE", "JOB_SESSION", "cost_view", "curves", "curves_status", "estimate_view",
           "estimated_stats", "layer_rows", "levels", "model_key", "with_cost"]
