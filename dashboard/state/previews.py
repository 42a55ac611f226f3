"""Previews of big models: a big model (its workload's ``info["preview_items"]``, or over 5 M parameters) is first
measured on a fixed preview subset, its first N test items, so a slider move shows numbers quickly; the whole test set
is measured in a background thread (one at a time per process, on a copy of the model) and replaces the preview when
it is done."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import streamlit as st
import torch

from compression_core import CompressionError, extra_metrics, measure

from .lru import LRU
from .recipes import recipe_key
from .results import _measure_full, _store, applied, extra_view, run_recipe
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


class _Filling:
    """Full-test-set views measured in background threads: key -> view (or the exception), and the keys running."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker = threading.Lock()  # one full measurement at a time: the machine is shared
        self.done: OrderedDict[str, Any] = OrderedDict()
        self.running: set[str] = set()

    def fill(self, key: str, pre: tuple[Any, float], f: dict, results: LRU) -> None:
        with self.worker:
            try:
                torch.set_num_threads(1)
                out: Any = _measure_full(key, pre, f, results)[1]
            except Exception as e:  # shown as one line by the page
                out = CompressionError(one_line(e))
        with self.lock:
            self.done[key] = out
            self.running.discard(key)
            while len(self.done) > 64:
                self.done.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _filling() -> _Filling:
    return _Filling()


def full_view(key: str) -> dict | None:
    """The whole test set's view of an applied recipe when it is ready, else None (its measurement is started in a
    background thread on the first call: the page stays responsive and polls)."""
    fl = _filling()
    with fl.lock:
        if key in fl.done:
            if isinstance(fl.done[key], Exception):
                raise fl.done[key]
            return fl.done[key]
        if key in fl.running:
            return None
        fl.running.add(key)
    pre, f, results = applied(key), facts(json.loads(key)["model"]), _store()
    threading.Thread(target=fl.fill, args=(key, pre, f, results), daemon=True, name="full-measure").start()
    return None


def full_ready(key: str) -> bool:
    """True once the background measurement of ``key`` on the whole test set has finished (or failed)."""
    fl = _filling()
    with fl.lock:
        return key in fl.done


@st.cache_data(show_spinner=False)
def baseline_preview_metric(ref: str) -> float:
    """The baseline's metric on the preview subset (what a preview's change is measured against)."""
    wl = baseline(ref)
    return float(wl.score(wl.model, "test") if preview_size(ref) is None else
                 extra_metrics.preview_workload(wl, preview_size(ref)[0]).score(wl.model, "test"))


def run_recipe_live(recipe: dict) -> dict:
    """``run_recipe`` for the Explore page: a big model's first numbers come from its preview subset (the view has
    ``"preview": [n, total]``) until the whole test set is measured in the background; small models as before.
    Every view has ``"extra"``: the workload's extra metrics ({} when it has none)."""
    key = recipe_key(recipe)
    ref = recipe["model"]
    if preview_size(ref) is not None:
        fl = _filling()
        with fl.lock:
            done = fl.done.get(key)
        if isinstance(done, Exception):
            raise done
        if done is not None:
            return done
        if _store().get(key) is None:  # not measured yet (a trained result is measured at once, as before)
            view = dict(preview_view(key))
            full_view(key)  # start the whole test set now
            return view
    view = dict(run_recipe(recipe))
    view.setdefault("extra", extra_view(key, ref))
    return view
