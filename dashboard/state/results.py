"""Results of recipes, cached per process and shared read-only by every session: the compressed models (applied
with the library's ``apply_recipe``, the path the CLI takes, or adopted from a finished job), their measured views,
the models applied for a preview only, and per-layer weights.

The model caches are ``LRU``s rather than ``st.cache_resource`` functions: training steps report progress to a bar on
the page, and Streamlit refuses elements drawn from inside a cached function.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch

from compression_core import confusion_matrix, effective_weight, extra_metrics, measure
from compression_core.recipe import apply_recipe, parse_recipe
from compression_core.workload import Workload

import jobs  # dashboard/jobs: heavy work in worker processes (a finished recipe job's model is adopted here)

from . import baselines
from .lru import LRU, model_bytes
from .recipes import recipe_key
from .workloads import baseline, facts


def _view(model: torch.nn.Module, wl: Workload, stats, f: dict) -> dict:
    s = stats.model_dump()
    cm = None
    if f["classification"]:
        cm = confusion_matrix(model, wl.test.x, wl.test.y, f["num_classes"]).numpy()
    return {"stats": s, "confusion": cm}


@st.cache_data(show_spinner=False)
def baseline_view(ref: str) -> dict:
    """Measured numbers of the baseline (latency is timed on request, against a compressed model), kept on disk
    by content (``baselines.py``): a server restart does not measure the same baseline again."""
    wl = baseline(ref)
    f = facts(ref)
    return baselines.cached_view(wl, f, lambda: _view(wl.model, wl, measure(wl.model, wl, name=wl.name,
                                                                            with_latency=False), f))


# Kept compressed models, bounded by bytes as well as count: each holds a whole model (a BERT-base copy is ~440 MB;
# 24 of them and 8 unmeasured ones got the server OOM-killed at 22 GB after a dozen moves on a 110 M model)
STORE_MAX_BYTES = 2 * 2**30
UNMEASURED_MAX_BYTES = 1 * 2**30


@st.cache_resource(show_spinner=False)
def _store() -> LRU:
    return LRU(size=24, max_bytes=STORE_MAX_BYTES, weigh=model_bytes)


def compressed(key: str, progress: Callable[[float, str], None] | None = None) -> tuple[Any, float]:
    """(RecipeResult, seconds) of the recipe ``key``, applied with the library's ``apply_recipe`` (the same path
    the CLI takes) and cached per process; the compressed model is shared read-only."""
    hit = _store().get(key)
    if hit is not None:
        return hit
    pre = _unmeasured().get(key)  # applied for a preview (big models): measure it here, do not apply it again
    if pre is not None:
        return _measure_full(key, pre, facts(json.loads(key)["model"]), _store())[0]
    recipe = parse_recipe(json.loads(key))
    wl = baseline(recipe.model)
    t0 = time.perf_counter()
    result = apply_recipe(recipe, progress=progress, with_latency=False, measure_before=False, workload=wl)
    value = (result, time.perf_counter() - t0)
    _store().put(key, value)
    return value


@st.cache_data(show_spinner=False, max_entries=256)
def result_view(key: str) -> dict:
    """Measured numbers of a recipe's result, cached by (model, recipe)."""
    result, seconds = compressed(key)
    ref = json.loads(key)["model"]
    view = _view(result.model, baseline(ref), result.after, facts(ref))
    view["steps"] = [s.to_json_dict() for s in result.steps]
    view["seconds"] = seconds
    return view


def adopt_job_result(result: dict) -> None:
    """Take a finished training job's result (``jobs.run_recipe`` in a worker process; the model rebuilt here from
    its bundle) into the per-process result cache, as if ``compressed`` had applied the recipe here."""
    _store().put(recipe_key(result["recipe"]), (jobs.recipe_result(result), result["seconds"]))


def run_recipe(recipe: dict, progress: Callable[[float, str], None] | None = None) -> dict:
    """Apply ``recipe`` (cached by its canonical key) and return its measured view."""
    key = recipe_key(recipe)
    compressed(key, progress)
    return result_view(key)


@st.cache_resource(show_spinner=False)
def _unmeasured() -> LRU:
    return LRU(size=8, max_bytes=UNMEASURED_MAX_BYTES, weigh=model_bytes)


def applied(key: str, progress: Callable[[float, str], None] | None = None) -> tuple[Any, float]:
    """(RecipeResult, seconds) of the recipe ``key``, measured (``compressed``) or only applied (for a preview)."""
    hit = _store().get(key) or _unmeasured().get(key)
    if hit is not None:
        return hit
    recipe = parse_recipe(json.loads(key))
    t0 = time.perf_counter()
    result = apply_recipe(recipe, progress=progress, with_latency=False, measure_before=False, measure_after=False,
                          workload=baseline(recipe.model))
    value = (result, time.perf_counter() - t0)
    _unmeasured().put(key, value)
    return value


def _measure_full(key: str, pre: tuple[Any, float], f: dict, results: LRU) -> tuple[tuple[Any, float], dict]:
    """Measure an applied recipe on the whole test set (on a copy of its model: no hooks on a shared model):
    ((RecipeResult, seconds), view); the measured result goes into ``results``. No Streamlit calls (threads)."""
    result, seconds = pre
    wl = baseline(json.loads(key)["model"])
    t0 = time.perf_counter()
    model = copy.deepcopy(result.model)
    stats = measure(model, wl, name=f"{wl.name} (recipe)", with_latency=False)
    view = _view(model, wl, stats, f)
    view["extra"] = dict(stats.extra)  # measured by ``measure`` (the workload's extra metrics): not again
    value = (dataclasses.replace(result, after=stats), seconds + time.perf_counter() - t0)
    results.put(key, value)
    view["steps"] = [s.to_json_dict() for s in result.steps]
    view["seconds"] = value[1]
    return value, view


@st.cache_data(show_spinner=False, max_entries=256)
def extra_view(key: str | None, ref: str) -> dict[str, float]:
    """The workload's extra metrics (e.g. fidelity) of the baseline (key None: kept on disk) or a recipe's result,
    whole test set."""
    if key is None:
        wl = baseline(ref)
        return baselines.cached_extra(wl, lambda: extra_metrics.compute(wl.model, wl))
    return extra_metrics.compute(model_of(key, ref), baseline(ref))


def is_applied(key: str) -> bool:
    """True when this process holds the recipe ``key``'s compressed model (measured, previewed or adopted from a
    job): ``applied(key)`` then returns it without applying (or training) anything."""
    return _store().get(key) is not None or _unmeasured().get(key) is not None


def model_of(key: str | None, ref: str) -> torch.nn.Module:
    """The baseline model (key None) or a recipe's compressed model."""
    return baseline(ref).model if key is None else applied(key)[0].model


@st.cache_data(show_spinner=False, max_entries=256)
def layer_weights(key: str | None, ref: str, layer: str) -> np.ndarray | None:
    """One layer's effective weights (masks applied, dequantized) as float32 numpy in the layer's own shape (first
    axis = output channel, so per-channel quantization levels can be read back), or None if the layer is gone."""
    model = model_of(key, ref)
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        return None
    w = effective_weight(module)
    if w is None:
        return None
    return w.float().cpu().numpy()
