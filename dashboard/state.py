"""Shared dashboard state: the workloads on offer, cached baselines and results, the session's history, error lines.

Models come from the library only: ``compression_core.workload_names()`` (the samples and anything registered) plus
the workloads named on the command line (``streamlit run dashboard/app.py -- --workload REF``, repeatable). A
baseline is a ``compression_core.Workload``, cached once per process (``st.cache_resource``) and never mutated:
every technique copies its input. Results are cached by (model, recipe). A user's history lives in
``st.session_state``. The dashboard holds no compression logic: it builds a recipe and calls ``apply_recipe``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

import compression_core  # noqa: F401  (imports every technique package: they register themselves)
from compression_core import CompressionError, confusion_matrix, effective_weight, measure, predict
from compression_core import inputs as I
from compression_core import extra_metrics  # secondary metrics and preview subsets from workload info
from compression_core.cpu import CpuFacts, cpu_facts
from compression_core.recipe import (MAX_RECIPE_BYTES as MAX_RECIPE_UPLOAD_BYTES, apply_recipe, load_recipe,
                                     parse_recipe, recipe_to_dict, recipe_to_yaml, validation_error_line)
from compression_core.timing import compare_calls, compare_latency
from compression_core.workload import Workload, registered_workloads, resolve_workload, workload_names

import jobs  # noqa: E402  (dashboard/: heavy work in worker processes)
import store  # noqa: E402  (dashboard/: history and settings in the database)

DEFAULT_MODEL = "digits-cnn"
RUNTIMES = ("torch", "ONNX Runtime")


# ------------------------------------------------------------------------------------------------ workloads
def cli_references(argv: list[str] | None = None) -> list[str]:
    """The ``--workload REF`` arguments given after ``--`` on the ``streamlit run`` command line, in order."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workload", action="append", default=[])
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    return [r for r in args.workload if r.strip()]


@st.cache_resource(show_spinner=False)
def _load(ref: str) -> tuple[Workload | None, str | None]:
    """(workload, None) or (None, one-line error), once per process: a bad reference is not retried each rerun."""
    try:
        return resolve_workload(ref), None
    except Exception as e:  # CompressionError from the library; anything else in one line
        return None, one_line(e)


def models() -> list[str]:
    """Every model a page lists, by reference: the registered names, then the command line's workloads."""
    refs = list(workload_names())
    for ref in cli_references():
        wl, _ = _load(ref)
        if wl is not None and (wl.reference or ref) not in refs:
            refs.append(wl.reference or ref)
    return refs


def reference_errors() -> list[str]:
    """One line per command-line reference that cannot be loaded."""
    out = []
    for ref in cli_references():
        _, err = _load(ref)
        if err:
            out.append(f"--workload {ref}: {err}")
    return out


def baseline(ref: str) -> Workload:
    """The workload ``ref`` (loaded once per process and shared by every session: never mutate it)."""
    wl, err = _load(ref)
    if wl is None:
        raise CompressionError(err or f"model: cannot load {ref!r}")
    return wl


def label(ref: str) -> str:
    """What a model list shows: the registered name, or the workload's name and where it comes from."""
    if ref in registered_workloads():
        return ref
    wl, _ = _load(ref)
    name = wl.name if wl is not None else ref
    src = ref.rsplit("/", 1)[-1]
    return f"{name} ({src})" if src != name else name


def default_index(refs: list[str], preferred: str = DEFAULT_MODEL) -> int:
    return refs.index(preferred) if preferred in refs else 0


@st.cache_data(show_spinner=False)
def facts(ref: str) -> dict:
    """What the pages say about a model, from the workload (``info`` where present, else derived from the model):
    name, architecture, task, classifier, metric, class names and whether predictions are classes."""
    wl = baseline(ref)
    reg = registered_workloads().get(ref)
    info = {**(dict(reg.info) if reg is not None else {}), **dict(wl.info)}
    out = predict(wl.model, I.take(wl.test.x, slice(0, 1)))  # (1, outputs)
    n_out = int(out.shape[-1]) if out.dim() >= 2 else 1
    num_classes = int(info.get("num_classes") or n_out)
    names = info.get("class_names")
    class_names = [str(c) for c in names] if names and len(names) == num_classes else [str(i) for i in range(num_classes)]
    y = wl.test.y
    classification = (out.dim() == 2 and y is not None and y.dim() == 1 and not y.is_floating_point()
                      and int(y.min()) >= 0 and int(y.max()) < num_classes)
    return {
        "name": wl.name, "reference": wl.reference or ref,
        "architecture": str(info.get("architecture") or type(wl.model).__name__),
        "task": str(info.get("task") or wl.description or ""),
        "classifier": wl.output_layer, "metric": wl.metric_name, "percent": bool(wl.metric.percent),
        "num_classes": num_classes, "class_names": class_names, "classification": bool(classification),
        "test_items": len(wl.test), "tensor_input": not I.is_dict(wl.test.x),
    }


def tensor_input(ref: str) -> bool:
    """True when the model takes one tensor (not a dict of tensors), read from the listing where it says so
    (without loading the model), else from the loaded workload."""
    reg = registered_workloads().get(ref)
    if reg is not None and "input_shape" in reg.info:
        return reg.info["input_shape"] is not None
    return facts(ref)["tensor_input"]


def metric_text(value: float, f: dict) -> str:
    """A metric value as a person reads it: ``97.78 %`` for fractions, ``0.8123`` otherwise."""
    return f"{value * 100:.2f} %" if f["percent"] else f"{value:.4f}"


def metric_delta(after: float, before: float, f: dict) -> str:
    return f"{(after - before) * 100:+.2f} points" if f["percent"] else f"{after - before:+.4f}"


def metric_title(f: dict) -> str:
    """``Accuracy`` (the metrics' label the tests and the load benchmark read), or the workload's metric name."""
    return "Accuracy" if f["metric"] == "accuracy" else f["metric"].capitalize()


# ------------------------------------------------------------------------------------------------ library
def recipe_dict(model: str, steps: list[dict], seed: int = 0) -> dict:
    """The recipe as plain data (what is exported, hashed and cached); ``model`` is the workload's reference."""
    return {"version": 1, "model": model, "seed": seed, "steps": steps}


def recipe_key(recipe: dict) -> str:
    """A canonical string of a recipe: the cache key of its results."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def to_yaml(recipe: dict) -> str:
    """The recipe as YAML text through the library's own writer (the very file the CLI reads)."""
    return recipe_to_yaml(parse_recipe(recipe))


def parse_recipe_text(text: str) -> dict:
    """Validate uploaded recipe text (YAML, JSON or Markdown front matter) with the library; one-line errors."""
    return recipe_to_dict(load_recipe(text))


def one_line(exc: BaseException) -> str:
    """A single line for ``st.error``: CompressionError as is, pydantic's first error as ``field: problem``."""
    from pydantic import ValidationError

    if isinstance(exc, CompressionError):
        return " ".join(str(exc).split())
    if isinstance(exc, ValidationError):
        try:
            return validation_error_line(exc)
        except Exception:
            errs = exc.errors()
            if errs:
                e = errs[0]
                loc = ".".join(str(p) for p in e.get("loc", ())) or "recipe"
                return f"{loc}: {e.get('msg', 'invalid')}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text[:300]}"


def cpu() -> CpuFacts:
    """This machine's CPU facts (detected once per process by the library): every page's CPU sentence."""
    return cpu_facts()


# ------------------------------------------------------------------------------------------------ caches
def _view(model: torch.nn.Module, wl: Workload, stats, f: dict) -> dict:
    s = stats.model_dump()
    cm = None
    if f["classification"]:
        cm = confusion_matrix(model, wl.test.x, wl.test.y, f["num_classes"]).numpy()
    return {"stats": s, "confusion": cm}


@st.cache_data(show_spinner=False)
def baseline_view(ref: str) -> dict:
    """Measured numbers of the baseline (latency is timed on request, against a compressed model)."""
    wl = baseline(ref)
    return _view(wl.model, wl, measure(wl.model, wl, name=wl.name, with_latency=False), facts(ref))


class _ResultStore:
    """A small process-wide LRU of compressed models by recipe key, shared read-only by every session.

    Not an ``st.cache_resource`` function itself: training steps report progress to a bar on the page, and
    Streamlit refuses elements drawn from inside a cached function.
    """

    def __init__(self, size: int = 24) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> tuple[Any, float] | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: str, value: tuple[Any, float]) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _store() -> _ResultStore:
    return _ResultStore()


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


# ------------------------------------------------------------------------------------------------ previews
# A big model (its workload's ``info["preview_items"]``, or over 5 M parameters) is first measured on a fixed preview
# subset, its first N test items, so a slider move shows numbers quickly; the whole test set is measured in a
# background thread (one at a time per process, on a copy of the model) and replaces the preview when it is done.
def preview_size(ref: str) -> tuple[int, int] | None:
    """(preview items, test items) when a change on ``ref`` is first measured on a preview subset, else None."""
    wl = baseline(ref)
    n = extra_metrics.preview_items(wl)
    return None if n is None else (n, len(wl.test))


@st.cache_resource(show_spinner=False)
def _unmeasured() -> _ResultStore:
    return _ResultStore(size=8)


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


def _measure_full(key: str, pre: tuple[Any, float], f: dict, results: _ResultStore) -> tuple[tuple[Any, float], dict]:
    """Measure an applied recipe on the whole test set (on a copy of its model: no hooks on a shared model):
    ((RecipeResult, seconds), view); the measured result goes into ``results``. No Streamlit calls (threads)."""
    import copy
    import dataclasses

    result, seconds = pre
    wl = baseline(json.loads(key)["model"])
    t0 = time.perf_counter()
    model = copy.deepcopy(result.model)
    stats = measure(model, wl, name=f"{wl.name} (recipe)", with_latency=False)
    view = _view(model, wl, stats, f)
    view["extra"] = extra_metrics.compute(model, wl)
    value = (dataclasses.replace(result, after=stats), seconds + time.perf_counter() - t0)
    results.put(key, value)
    view["steps"] = [s.to_json_dict() for s in result.steps]
    view["seconds"] = value[1]
    return value, view


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

    def fill(self, key: str, pre: tuple[Any, float], f: dict, results: _ResultStore) -> None:
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


def item_name(ref: str) -> str:
    """What a test item is called on the page: the workload's ``info["item_name"]``, "sentences" for token ids."""
    wl = baseline(ref)
    name = (wl.info or {}).get("item_name")
    if name:
        return str(name)
    x = wl.test.x
    text = (I.is_dict(x) and "input_ids" in x) or (not I.is_dict(x) and not x.is_floating_point())
    return "sentences" if text else "items"


@st.cache_data(show_spinner=False, max_entries=256)
def extra_view(key: str | None, ref: str) -> dict[str, float]:
    """The workload's extra metrics (e.g. fidelity) of the baseline (key None) or a recipe's result, whole test set."""
    return extra_metrics.compute(model_of(key, ref), baseline(ref))


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


def model_of(key: str | None, ref: str) -> torch.nn.Module:
    """The baseline model (key None) or a recipe's compressed model."""
    return baseline(ref).model if key is None else applied(key)[0].model


def compare(key: str, ref: str, batch: int, threads: int, runtime: str = "torch") -> dict:
    """Baseline vs compressed latency timed NOW, interleaved in one run (never a baseline timed earlier)."""
    wl = baseline(ref)
    example = I.head(wl.test.x, batch)
    if runtime == "torch":
        c = compare_latency(wl.model, model_of(key, ref), example, threads=threads)
        return c.to_json_dict()
    sb, sa = _ort_session(None, ref, threads), _ort_session(key, ref, threads)
    fb, fa = _ort_feed(sb, example), _ort_feed(sa, example)
    c = compare_calls(lambda: sb.run(None, fb), lambda: sa.run(None, fa), runtime="onnxruntime",
                      batch_size=batch, threads=threads)
    return c.to_json_dict()


def ort_module():
    """``compression_core.ort`` (ONNX Runtime measurement) if onnxruntime is installed, else None."""
    try:
        import onnxruntime  # noqa: F401

        from compression_core import ort
    except ImportError:
        return None
    return ort


@st.cache_resource(show_spinner=False, max_entries=32)
def _ort_session(key: str | None, ref: str, threads: int):
    """An ONNX Runtime session of the baseline (key None) or a recipe's result, exported once."""
    from compression_core.onnx_export import to_onnx

    ort = ort_module()
    wl = baseline(ref)
    return ort.session(to_onnx(model_of(key, ref), I.take(wl.test.x, slice(0, 2))), threads=threads)


def _ort_feed(sess, example: Any) -> dict:
    """The session's inputs for ``example`` by input name (a dict input key by key, token ids stay integers)."""
    names = [i.name for i in sess.get_inputs()]
    if I.is_dict(example):
        return {k: v.detach().cpu().numpy() for k, v in example.items() if k in names}
    x = example.detach().cpu()
    return {names[0]: (x.float() if x.is_floating_point() else x).numpy()}


@st.cache_data(show_spinner=False, max_entries=64)
def ort_view(key: str | None, ref: str) -> dict:
    """Size and accuracy of the baseline (key None) or a recipe's result exported to ONNX, in ONNX Runtime."""
    stats = ort_module().measure_ort(model_of(key, ref), baseline(ref), name=baseline(ref).name, with_latency=False)
    return {k: v for k, v in stats.model_dump().items() if k != "layers"}


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


# ------------------------------------------------------------------------------------------------ figures
class Ready(go.Figure):
    """A figure already turned into plain data. ``st.plotly_chart`` calls ``to_dict()`` on a plotly Figure and
    trusts it: no second validation pass (which cost more than building the figure), and no copy of plotly's
    7 KB default template in every chart's message (the page's "streamlit" theme styles the chart)."""

    def __init__(self, d: dict) -> None:  # noqa: D107 - deliberately no plotly validation
        self._ready_dict = d

    def to_dict(self) -> dict:
        return self._ready_dict


def _plain(fig) -> dict:
    d = fig.to_dict()
    d.get("layout", {}).pop("template", None)
    return d


class _FigureCache(_ResultStore):
    pass


@st.cache_resource(show_spinner=False)
def _figures() -> _FigureCache:
    return _FigureCache(size=256)


def figure(name: str, key: tuple, build: Callable[[], Any]):
    """The figure ``name`` for ``key`` (a tuple of strings and numbers naming its inputs), built by ``build()`` once
    per process and served as finished data afterwards: moving a slider back to a value already seen, or a chart
    that did not change (the baseline's), costs nothing to rebuild."""
    k = json.dumps([name, *key], default=str)
    hit = _figures().get(k)
    if hit is None:
        hit = (_plain(build()), 0.0)
        _figures().put(k, hit)
    return Ready(hit[0])


# ------------------------------------------------------------------------------------------------ session
def history() -> list[dict]:
    """This browser's kept configurations (saved and applied: from the store, so they survive a reload) and the
    current unsaved one, oldest first."""
    if "history" not in st.session_state:
        st.session_state["history"] = store.load_history()
    return st.session_state["history"]


def record(ref: str, label_: str, recipe: dict | None, stats: dict, how: str = "preview") -> dict:
    """Add a configuration to the history once per distinct recipe; returns its row. ``how``: "preview" (the current
    configuration: it replaces the previous unsaved row, so slider moves do not pile up), "applied" (trained,
    imported, timed) or "saved" ("Save to history"): those are written to the store. Baselines are always kept."""
    how = "applied" if recipe is None and how == "preview" else how
    key = recipe_key(recipe) if recipe is not None else f"baseline:{ref}"
    rows = history()
    for row in rows:
        if row["key"] == key:
            if how != "preview" and row.get("how") not in (how, "saved"):
                store.keep(row, how)
            return row
    row = {
        "id": max((r["id"] for r in rows), default=0) + 1, "key": key, "model": label(ref), "ref": ref, "label": label_,
        "baseline": recipe is None, "metric": stats.get("metric", "accuracy"),
        "accuracy": stats["accuracy"], "size_bytes": stats["size_bytes"],
        "sparse_size_bytes": stats.get("sparse_size_bytes"), "theoretical_size_bytes": stats.get("theoretical_size_bytes"),
        "simulated": bool(stats.get("simulated")), "nonzero_params": stats["nonzero_params"], "params": stats["params"],
        "smallest_bytes": smallest_bytes(stats), "recipe": recipe, "latency": [],
        # the same numbers in the units the store's CSV export and the Class page read
        "accuracy_%": stats["accuracy"] * 100, "size_KB": stats["size_bytes"] / 1024,
        "sparse_KB": None if stats.get("sparse_size_bytes") is None else stats["sparse_size_bytes"] / 1024,
        "theoretical_KB": None if stats.get("theoretical_size_bytes") is None else stats["theoretical_size_bytes"] / 1024,
        "best_KB": smallest_bytes(stats) / 1024, "latency_ms": None,
    }
    rows[:] = [r for r in rows if r.get("how") != "preview"]  # one unsaved row: the current configuration
    rows.append(row)
    store.keep(row, how)
    del rows[:-200]
    return row


def record_latency(ref: str, recipe: dict, stats: dict, comparison: dict) -> None:
    """Add one latency comparison to a configuration's row, with the conditions it was measured under (batch,
    threads, runtime, rounds): a later measurement is added beside it, never written over it."""
    row = record(ref, describe(recipe["steps"]), recipe, stats, how="applied")
    row["latency"].append({k: comparison[k] for k in (
        "runtime", "batch_size", "threads", "rounds", "before_ms", "before_low_ms", "before_high_ms", "after_ms",
        "after_low_ms", "after_high_ms", "ratio", "ratio_low", "ratio_high", "verdict")})
    row["latency_ms"] = comparison["after_ms"]  # the latest (kept for exports; every timing stays in "latency")
    store.keep(row, row["how"])  # the timing goes into the stored row too


def smallest_bytes(stats: dict) -> int:
    """The smallest real (or theoretical, if simulated) size of a result in bytes: what the size chart plots."""
    return min([stats["size_bytes"]] + [stats[k] for k in ("sparse_size_bytes", "theoretical_size_bytes") if stats.get(k)])


def describe(steps: list[dict]) -> str:
    """A short label of a configuration for the history table."""
    if not steps:
        return "baseline"
    parts = []
    for s in steps:
        extra = [f"{k}={v}" for k, v in s.items()
                 if k not in ("kind", "targets", "overrides") and v is not None and (k, v) != ("include_classifier", False)]
        if s.get("targets"):
            extra.append(f"{len(s['targets'])} layers")
        if s.get("overrides"):
            extra.append(f"{len(s['overrides'])} overrides")
        parts.append(s["kind"] + (f"({', '.join(extra)})" if extra else ""))
    return " + ".join(parts)


# ------------------------------------------------------------------------------------------------ experiments
def experiments_frame(rows: list[dict]):
    """One row per configuration, numbers rounded for people, sizes and the metric also as changes relative to the
    configuration's own model's baseline (so models of very different sizes compare on one chart)."""
    import pandas as pd

    base = {r["ref"]: r for r in rows if r["baseline"]}
    out = []
    for r in rows:
        b = base.get(r["ref"], r)
        pct = r["metric"] in ("accuracy", "agreement") or 0 <= r["accuracy"] <= 1
        scale = 100 if pct else 1
        lat = r["latency"][-1] if r["latency"] else None
        out.append({
            "id": r["id"], "model": r["model"], "label": r["label"], "baseline": r["baseline"],
            "simulated": r["simulated"], "metric": r["metric"],
            "value": round(r["accuracy"] * scale, 2),
            "change_pt": round((r["accuracy"] - b["accuracy"]) * scale, 2),
            "size_kb": round(r["size_bytes"] / 1024, 1),
            "sparse_kb": None if r["sparse_size_bytes"] is None else round(r["sparse_size_bytes"] / 1024, 1),
            "simulated_kb": None if r["theoretical_size_bytes"] is None else round(r["theoretical_size_bytes"] / 1024, 1),
            "size_ratio": round(r["smallest_bytes"] / b["smallest_bytes"] if r["baseline"] else
                                r["smallest_bytes"] / b["size_bytes"], 3),
            "nonzero_params": int(r["nonzero_params"]), "params": int(r["params"]),
            "latency_ratio": None if lat is None else round(lat["ratio"], 3),
            "latency_ratio_low": None if lat is None else round(lat["ratio_low"], 3),
            "latency_ratio_high": None if lat is None else round(lat["ratio_high"], 3),
            "latency_verdict": None if lat is None else lat["verdict"],
            "timings": len(r["latency"]),
        })
    df = pd.DataFrame(out)
    if len(df):  # every baseline sits at (1, 0) on both charts
        df.loc[df["baseline"], ["size_ratio", "latency_ratio"]] = 1.0
        df.loc[df["baseline"], "change_pt"] = 0.0
    return df


def latency_frame(rows: list[dict]):
    """One row per latency comparison ever timed (a later one never overwrites an earlier one), with the
    conditions it was timed under."""
    import pandas as pd

    out = []
    for r in rows:
        for i, c in enumerate(r["latency"], 1):
            out.append({"id": r["id"], "model": r["model"], "label": r["label"], "timing": i, "runtime": c["runtime"],
                        "batch": c["batch_size"], "threads": c["threads"], "rounds": c["rounds"],
                        "before_ms": round(c["before_ms"], 4), "after_ms": round(c["after_ms"], 4),
                        "ratio": round(c["ratio"], 3), "ratio_range": f"{c['ratio_low']:.2f}-{c['ratio_high']:.2f}",
                        "verdict": c["verdict"]})
    return pd.DataFrame(out)


FIELD_LABELS = {  # what the side-by-side table calls each field
    "model": "model", "label": "configuration", "metric": "metric", "value": "metric value (% or raw)",
    "change_pt": "change vs its baseline (points)", "size_kb": "dense file (KB)", "sparse_kb": "sparse file (KB)",
    "simulated_kb": "simulated size (KB)", "size_ratio": "smallest size (x of baseline)",
    "nonzero_params": "non-zero parameters", "params": "parameters", "latency_ratio": "latency (x of baseline)",
    "latency_verdict": "latency verdict", "simulated": "simulated (not a real file)",
}
