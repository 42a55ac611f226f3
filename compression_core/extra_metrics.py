"""A workload's secondary metrics and its preview subset, read generically from ``Workload.info``.

Two optional ``info`` keys (no workload has to give them):

- ``extra_metrics``: ``{name: fn}`` where ``fn`` is a callable or a ``"module:attr"`` reference to one, called as
  ``fn(model, workload, n=None)`` -> float (``n``: only the first ``n`` test items, for a preview). minilm-topics
  gives ``{"fidelity": "<its module>:fidelity"}`` (mean cosine similarity of sentence embeddings).
- ``preview_items``: how many of the first test items a quick preview measures (the split should be ordered so
  that a prefix is balanced). Without it, a model over ``PREVIEW_PARAMS`` parameters is previewed on its first
  ``DEFAULT_PREVIEW_ITEMS`` test items; smaller models are measured on the whole test set at once.

>>> extra_metrics(wl)                       # {"fidelity": <function>} or {}
>>> compute(model, wl, n=60)                # {"fidelity": 0.97}
>>> preview_items(wl)                       # 60, or None: measure everything at once
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Callable

from torch import nn

from .errors import CompressionError
from .workload import Workload, _with

PREVIEW_PARAMS = 5_000_000  # above this many parameters a slider move is first measured on a preview subset
DEFAULT_PREVIEW_ITEMS = 64

_LOCK = threading.Lock()  # metrics read activations with hooks: one evaluation at a time per process


def _resolve(name: str, fn: Any) -> Callable:
    if callable(fn):
        return fn
    if isinstance(fn, str) and ":" in fn:
        mod, attr = fn.split(":", 1)
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise CompressionError(f"info.extra_metrics.{name}: cannot import {fn!r} ({type(e).__name__}); give a "
                                   "callable or 'module:function'") from None
    raise CompressionError(f"info.extra_metrics.{name}: expected a callable or 'module:function', got {fn!r}")


def extra_metrics(wl: Workload) -> dict[str, Callable]:
    """``{name: fn(model, workload, n=None)}`` from ``wl.info["extra_metrics"]`` ({} when there are none)."""
    spec = (wl.info or {}).get("extra_metrics") or {}
    return {str(k): _resolve(str(k), v) for k, v in dict(spec).items()}


def compute(model: nn.Module, wl: Workload, n: int | None = None) -> dict[str, float]:
    """Every extra metric of ``model`` on ``wl``'s test split (its first ``n`` items when given)."""
    out = {}
    for name, fn in extra_metrics(wl).items():
        with _LOCK:
            try:
                out[name] = float(fn(model, wl, n=n))
            except CompressionError:
                raise
            except Exception as e:
                raise CompressionError(f"{name}: cannot be measured on this model ({type(e).__name__}: "
                                       f"{(str(e).splitlines() or [''])[0][:200]})") from None
    return out


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def preview_items(wl: Workload) -> int | None:
    """How many test items a preview measures, or None when the whole test set is measured at once."""
    total = len(wl.test)
    n = (wl.info or {}).get("preview_items")
    if n is None and param_count(wl.model) > PREVIEW_PARAMS:
        n = DEFAULT_PREVIEW_ITEMS
    if n is None or int(n) <= 0 or int(n) >= total:
        return None
    return int(n)


def preview_workload(wl: Workload, n: int) -> Workload:
    """``wl`` with its test split cut to the first ``n`` items (the model and other splits shared)."""
    return _with(wl, test=wl.test.take(slice(0, n)))


__all__ = ["DEFAULT_PREVIEW_ITEMS", "PREVIEW_PARAMS", "compute", "extra_metrics", "param_count", "preview_items",
           "preview_workload"]
