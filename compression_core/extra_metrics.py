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
>>> generate_text(model, wl, "Hello")       # a language model's greedy continuation (info["generate"])

A third optional key, ``generate``: a callable or ``"module:attr"`` reference, ``fn(model, prompt,
max_new_tokens=N) -> str``, a language model's continuation of ``prompt`` (greedy: deterministic). Without it, a
registered workload whose factory's module defines ``generate`` uses that (tiny-lm does).
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any, Callable

from torch import nn

from .errors import CompressionError
from .workload import Workload, _with, registered_workloads

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


def text_generator(wl: Workload) -> Callable | None:
    """``fn(model, prompt, max_new_tokens=N) -> str`` from ``info["generate"]``, else the ``generate`` function of the
    module that registered the workload; None when the workload gives none (not a language model)."""
    spec = (wl.info or {}).get("generate")
    if spec is not None:
        return _resolve("generate", spec)
    reg = registered_workloads().get(wl.reference or wl.name)
    module = sys.modules.get(getattr(getattr(reg, "factory", None), "__module__", "") or "")
    fn = getattr(module, "generate", None)
    return fn if callable(fn) else None


def generate_text(model: nn.Module, wl: Workload, prompt: str, max_new_tokens: int = 32) -> str:
    """``model``'s continuation of ``prompt`` (a compressed copy of ``wl``'s model, or the model itself), greedy,
    ``max_new_tokens`` at most; a workload with no text generator, or a model that cannot run one, is one line."""
    fn = text_generator(wl)
    if fn is None:
        raise CompressionError(f"generate: {wl.name} gives no text generator (info['generate']: a function "
                               "(model, prompt, max_new_tokens) -> str); only a language model has one")
    with _LOCK:
        try:
            return str(fn(model, prompt, max_new_tokens=max_new_tokens))
        except CompressionError:
            raise
        except Exception as e:
            raise CompressionError(f"generate: cannot generate text with this model ({type(e).__name__}: "
                                   f"{(str(e).splitlines() or [''])[0][:200]})") from None


__all__ = ["DEFAULT_PREVIEW_ITEMS", "PREVIEW_PARAMS", "compute", "extra_metrics", "generate_text", "param_count",
           "preview_items", "preview_workload", "text_generator"]
