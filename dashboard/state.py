"""Shared dashboard state: cached baselines and results, the current recipe, the session's history, error lines.

Baselines are cached once per process (``st.cache_resource``) and never mutated: every technique copies its input.
Results are cached by (model, recipe) (``st.cache_data`` for the measured numbers, a small ``cache_resource`` for
the compressed module itself, which is shared read-only). A user's history lives in ``st.session_state``.
The dashboard holds no compression logic: it builds a recipe and calls ``compression_core.recipe.apply_recipe``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch

import sample_models
from compression_core import CompressionError, confusion_matrix, effective_weight, latency, measure

DEFAULT_MODEL = "digits-cnn"
DIGITS_MODELS = [n for n in sample_models.MODEL_NAMES if n.startswith("digits-")]
try:  # uploads larger than the library accepts are refused before decoding (server.maxUploadSize caps at 1 MB)
    from compression_core.recipe import MAX_RECIPE_BYTES as MAX_RECIPE_UPLOAD_BYTES
except ImportError:  # pragma: no cover
    MAX_RECIPE_UPLOAD_BYTES = 256 * 1024


# ------------------------------------------------------------------------------------------------ library
def recipe_module():
    """``compression_core.recipe`` if it is installed in this tree, else None (the controls say so)."""
    try:
        from compression_core import recipe
    except ImportError:
        return None
    return recipe


def registered_kinds() -> set[str]:
    """Step kinds the library registers right now (each technique package registers on import)."""
    from compression_core import registered_configs

    recipe_module()  # importing the recipe module imports every technique package
    return {c.model_fields["kind"].default for c in registered_configs()}


def recipe_dict(model: str, steps: list[dict], seed: int = 0) -> dict:
    """The recipe as plain data (what is exported, hashed and cached)."""
    return {"version": 1, "model": model, "seed": seed, "steps": steps}


def recipe_key(recipe: dict) -> str:
    """A canonical string of a recipe: the cache key of its results."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def to_yaml(recipe: dict) -> str:
    """The recipe as YAML text through the library's own writer (the very file the CLI reads)."""
    rm = _require_recipe()
    return rm.recipe_to_yaml(rm.parse_recipe(recipe))


def _require_recipe():
    rm = recipe_module()
    if rm is None:
        raise CompressionError("recipe: the recipe module (compression_core.recipe) is not available yet")
    available_kinds()  # register every technique package before the Recipe union is built
    return rm


def parse_recipe_text(text: str) -> dict:
    """Validate uploaded recipe text (YAML, JSON or Markdown front matter) with the library; one-line errors."""
    rm = _require_recipe()
    return rm.recipe_to_dict(rm.load_recipe(text))


def one_line(exc: BaseException) -> str:
    """A single line for ``st.error``: CompressionError as is, pydantic's first error as ``field: problem``."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment]
    if isinstance(exc, CompressionError):
        return str(exc)
    if isinstance(exc, ValidationError):
        rm = recipe_module()
        if rm is not None:
            try:
                return rm.validation_error_line(exc)
            except Exception:
                pass
        errs = exc.errors()
        if errs:
            e = errs[0]
            loc = ".".join(str(p) for p in e.get("loc", ())) or "recipe"
            more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
            return f"{loc}: {e.get('msg', 'invalid')}{more}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text[:300]}"


# ------------------------------------------------------------------------------------------------ caches
@st.cache_resource(show_spinner=False)
def baseline(name: str) -> sample_models.SampleModel:
    """The trained sample model, loaded once per process and shared by every session: never mutate it."""
    return sample_models.load(name)


def _view(model: torch.nn.Module, sm: sample_models.SampleModel, stats) -> dict:
    s = stats.model_dump()
    cm = confusion_matrix(model, sm.data.test.x, sm.data.test.y, sm.info.num_classes).numpy()
    return {"stats": s, "confusion": cm}


@st.cache_data(show_spinner=False)
def baseline_view(name: str) -> dict:
    """Measured numbers of the baseline (no latency: that is measured on request)."""
    sm = baseline(name)
    return _view(sm.model, sm, measure(sm.model, sm.data, name=name, with_latency=False))


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
    rm = _require_recipe()
    recipe = rm.parse_recipe(json.loads(key))
    t0 = time.perf_counter()
    result = rm.apply_recipe(recipe, progress=progress, with_latency=False, measure_before=False)
    value = (result, time.perf_counter() - t0)
    _store().put(key, value)
    return value


@st.cache_data(show_spinner=False, max_entries=256)
def result_view(key: str) -> dict:
    """Measured numbers of a recipe's result, cached by (model, recipe)."""
    result, seconds = compressed(key)
    recipe = json.loads(key)
    sm = baseline(recipe["model"])
    view = _view(result.model, sm, result.after)
    view["steps"] = [s.to_json_dict() for s in result.steps]
    view["seconds"] = seconds
    return view


def run_recipe(recipe: dict, progress: Callable[[float, str], None] | None = None) -> dict:
    """Apply ``recipe`` (cached by its canonical key) and return its measured view."""
    key = recipe_key(recipe)
    compressed(key, progress)
    return result_view(key)


@st.cache_data(show_spinner=False, max_entries=256)
def latency_view(key: str | None, name: str, batch: int, threads: int) -> dict:
    """(median ms, IQR ms, runs) of the baseline (key None) or a recipe's result, cached per configuration."""
    model = baseline(name).model if key is None else compressed(key)[0].model
    x = baseline(name).data.test.x
    example = x[:batch] if len(x) >= batch else x.repeat((batch + len(x) - 1) // len(x), *[1] * (x.dim() - 1))[:batch]
    med, iqr, runs = latency(model, example, threads=threads, min_run_time=0.2)
    return {"latency_ms": med, "latency_iqr_ms": iqr, "latency_runs": runs}


def ort_module():
    """``compression_core.ort`` (ONNX Runtime measurement) if it and onnxruntime are installed, else None."""
    try:
        from compression_core import ort
    except ImportError:
        return None
    return ort


@st.cache_data(show_spinner=False, max_entries=128)
def ort_view(key: str | None, name: str, batch: int, threads: int) -> dict:
    """The baseline (key None) or a recipe's result exported to ONNX and measured in ONNX Runtime: size of the
    .onnx file, accuracy and latency through onnxruntime (the library's ``measure_ort``), cached per configuration."""
    model = baseline(name).model if key is None else compressed(key)[0].model
    stats = ort_module().measure_ort(model, baseline(name).data, name=name, batch_size=batch, threads=threads,
                                     min_run_time=0.2)
    return {k: v for k, v in stats.model_dump().items() if k != "layers"}


@st.cache_data(show_spinner=False, max_entries=256)
def layer_weights(key: str | None, name: str, layer: str) -> np.ndarray | None:
    """One layer's effective weights (masks applied, dequantized) as float32 numpy in the layer's own shape (first
    axis = output channel, so per-channel quantization levels can be read back), or None if the layer is gone."""
    model = baseline(name).model if key is None else compressed(key)[0].model
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        return None
    w = effective_weight(module)
    if w is None:
        return None
    return w.float().cpu().numpy()


# ------------------------------------------------------------------------------------------------ session
def history() -> list[dict]:
    """This session's applied configurations, oldest first."""
    return st.session_state.setdefault("history", [])


def record(name: str, label: str, recipe: dict | None, stats: dict, lat: dict | None = None) -> None:
    """Add a configuration to the history (once per distinct recipe; a later latency fills in its row)."""
    key = recipe_key(recipe) if recipe is not None else f"baseline:{name}"
    rows = history()
    for row in rows:
        if row["key"] == key:
            if lat:
                row["latency_ms"] = lat["latency_ms"]
            return
    rows.append({
        "id": len(rows) + 1, "key": key, "model": name, "label": label, "baseline": recipe is None,
        "accuracy": stats["accuracy"], "size_bytes": stats["size_bytes"],
        "accuracy_%": stats["accuracy"] * 100, "size_KB": stats["size_bytes"] / 1024,
        "sparse_KB": None if stats.get("sparse_size_bytes") is None else stats["sparse_size_bytes"] / 1024,
        "theoretical_KB": None if stats.get("theoretical_size_bytes") is None else stats["theoretical_size_bytes"] / 1024,
        "simulated": bool(stats.get("simulated")), "nonzero_params": stats["nonzero_params"],
        "params": stats["params"], "best_KB": smallest_kb(stats), "latency_ms": lat["latency_ms"] if lat else None,
        "recipe": recipe,
    })
    del rows[:-200]


def smallest_kb(stats: dict) -> float:
    """The smallest real (or theoretical, if simulated) size of a result in KB: what the Pareto chart plots."""
    sizes = [stats["size_bytes"]] + [stats[k] for k in ("sparse_size_bytes", "theoretical_size_bytes") if stats.get(k)]
    return min(sizes) / 1024


# ------------------------------------------------------------------------------------- widgets -> recipe
PRUNE_KINDS = {
    "none": None,
    "unstructured (weights)": "prune_unstructured",
    "structured (neurons / channels)": "prune_structured",
    "attention heads": "prune_structured",
    "whole layers / blocks": "prune_layers",
    "threshold (|w| below a value)": "prune_threshold",
}
QUANT_KINDS = {
    "none": None,
    "simulated n-bit (fake quant)": "fake_quant",
    "int8 dynamic (real)": "quantize_dynamic",
    "int8 static (real, calibrated)": "quantize_static",
    "int4 packed weights (real)": "quantize_int4",
    "fp16 (real)": "quantize_half",
    "bf16 (real)": "quantize_half",
}
_TECHNIQUE_PACKAGES = ("compression_core.prune", "compression_core.quantize", "compression_core.distill",
                       "compression_core.train")


def available_kinds() -> set[str]:
    """Step kinds registered by the technique packages present in this tree."""
    import importlib

    for mod in _TECHNIQUE_PACKAGES:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    return registered_kinds()


def _config_fields(kind: str) -> dict:
    from compression_core import registered_configs

    for c in registered_configs():
        if c.model_fields["kind"].default == kind:
            return c.model_fields
    return {}


def _step(kind: str, ui: dict, **fields) -> dict:
    """A step dict with the page's layer selection added where the config takes one.

    ``include_classifier`` is always written explicitly where the config has it, so "the classifier is left alone
    unless you tick the box" holds for every technique, whatever that technique's own default is.
    """
    known = _config_fields(kind)
    step = {"kind": kind, **fields}
    if "targets" in known and ui.get("targets") is not None:
        step["targets"] = list(ui["targets"])
    if "include_classifier" in known:
        step["include_classifier"] = bool(ui.get("include_classifier"))
    return step


def build_steps(ui: dict, training: bool) -> list[dict]:
    """The recipe steps for the Explore page's widget values (``training=False``: the cheap preview only)."""
    steps: list[dict] = []
    pk = ui.get("prune")
    if pk == "unstructured (weights)":
        steps.append(_step("prune_unstructured", ui, amount=ui["amount"], scope=ui.get("scope", "global"),
                           **({"overrides": dict(ui["overrides"])} if ui.get("overrides") else {})))
    elif pk in ("structured (neurons / channels)", "attention heads"):
        unit = "heads" if pk == "attention heads" else ui.get("unit", "channels")
        extra = {"overrides": dict(ui["overrides"])} if ui.get("overrides") and unit != "heads" else {}
        sub = {k: v for k, v in ui.items() if k != "targets"} if unit == "heads" else ui  # heads: per block, not per Linear
        steps.append(_step("prune_structured", sub, amount=ui["amount"], unit=unit, **extra))
        if ui.get("shrink"):
            steps.append({"kind": "shrink"})
    elif pk == "whole layers / blocks" and ui.get("blocks"):
        steps.append({"kind": "prune_layers", "names": list(ui["blocks"])})
    elif pk == "threshold (|w| below a value)":
        steps.append(_step("prune_threshold", ui, threshold=ui["threshold"]))
    if training and ui.get("finetune_epochs", 0) > 0 and steps:
        steps.append({"kind": "finetune", "epochs": int(ui["finetune_epochs"])})
    if training and ui.get("distill_epochs", 0) > 0:
        steps.append({"kind": "distill", "teacher": ui.get("teacher"), "epochs": int(ui["distill_epochs"])})
    qk = ui.get("quant")
    if qk == "simulated n-bit (fake quant)":
        extra = {"overrides": dict(ui["bit_overrides"])} if ui.get("bit_overrides") else {}
        steps.append(_step("fake_quant", ui, bits=int(ui["bits"]), **extra))
    elif qk == "int8 static (real, calibrated)" and training and ui.get("qat_epochs", 0) > 0:
        steps.append(_step("quantize_qat", ui, epochs=int(ui["qat_epochs"])))
    elif qk in ("fp16 (real)", "bf16 (real)"):
        steps.append({"kind": "quantize_half", "dtype": "fp16" if qk.startswith("fp16") else "bf16"})
    elif qk is not None and QUANT_KINDS.get(qk):
        steps.append(_step(QUANT_KINDS[qk], ui))
    return steps


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
