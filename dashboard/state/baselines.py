"""A baseline's measured numbers kept on disk (``compression_core.disk_cache``), so choosing a model again after a
server restart does not re-measure it: minilm-topics' baseline (test metric, confusion matrix, fidelity) took ~11 s
of a first visit's ~16 s.

Keyed by content: the model's tensors, the test split, the workload's name, metric and facts, and the source of the
code that measures (the library's ``measure``/``extra_metrics`` and the workload's own module), so new weights,
data or code are a miss. Read back hash-checked, from safetensors and JSON only; a damaged entry is deleted and
re-measured. No Streamlit here: ``results.baseline_view`` and ``extra_view`` call it inside their own caches.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import torch

from compression_core import disk_cache, extra_metrics
from compression_core.measure import ModelStats, measure
from compression_core.workload import Workload

VERSION = 1  # of what an entry holds


_CONTENT: dict[int, tuple[Workload, str]] = {}  # id -> (baseline, digest of its model and test split): once each


def _content(wl: Workload) -> str:
    """The digest of a baseline's tensors and test split, computed once per workload object (a baseline is never
    changed: the dashboard shares it read-only)."""
    hit = _CONTENT.get(id(wl))
    if hit is not None and hit[0] is wl:
        return hit[1]
    d = disk_cache.digest(disk_cache.model_digest(wl.model), disk_cache.tensor_digest([wl.test.x, wl.test.y]))
    if len(_CONTENT) > 64:
        _CONTENT.clear()
    _CONTENT[id(wl)] = (wl, d)
    return d


def content_key(wl: Workload, what: str, facts: dict | None = None) -> str:
    """The cache key of ``what`` about ``wl``'s baseline (see the module docstring)."""
    metric = getattr(wl, "metric", None)
    code = [measure, extra_metrics, inspect.getmodule(type(wl.model))]
    fn = getattr(metric, "fn", None)
    if fn is not None and inspect.getmodule(fn) is not None:
        code.append(inspect.getmodule(fn))
    return disk_cache.digest(VERSION, what, wl.name, getattr(wl, "metric_name", None), facts or {},
                             _content(wl),
                             disk_cache.source_digest(*[c for c in code if c is not None]),
                             {k: str(v) for k, v in (wl.info or {}).items() if k == "extra_metrics"})


_VIEWS = disk_cache.DiskCache("baseline-view")
_EXTRA = disk_cache.DiskCache("baseline-extra")


def cached_view(wl: Workload, facts: dict, build: Callable[[], dict]) -> dict:
    """``build()`` (``{"stats": ModelStats dump, "confusion": ndarray | None, ...}``) from disk when this baseline
    was measured before, else measured and stored."""
    key = content_key(wl, "view", facts)
    got = _VIEWS.load(key)
    if got is not None:
        tensors, meta = got
        try:
            view = dict(meta)
            view["stats"] = ModelStats.model_validate(meta["stats"]).model_dump()
            view["confusion"] = tensors["confusion"].numpy() if "confusion" in tensors else None
            return view
        except Exception:  # an entry of another shape: measured again below
            pass
    view = build()
    meta = {k: v for k, v in view.items() if k != "confusion"}
    meta["stats"] = ModelStats.model_validate(view["stats"]).model_dump(mode="json")
    cm = view.get("confusion")
    _VIEWS.save(key, {"confusion": torch.from_numpy(np.ascontiguousarray(cm))} if cm is not None else {}, meta)
    return view


def cached_extra(wl: Workload, build: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The baseline's extra metrics (e.g. fidelity) from disk, else ``build()`` stored."""
    key = content_key(wl, "extra")
    got = _EXTRA.load(key)
    if got is not None and isinstance(got[1], dict):
        return {str(k): float(v) for k, v in got[1].items()}
    out = build()
    _EXTRA.save(key, {}, {k: float(v) for k, v in out.items()})
    return out


def lookups() -> dict[str, Any]:
    """Hits, misses and damaged entries of this process's lookups (a benchmark prints them)."""
    return {"view": (_VIEWS.hits, _VIEWS.misses, _VIEWS.rejected), "extra": (_EXTRA.hits, _EXTRA.misses,
                                                                          _EXTRA.rejected)}
