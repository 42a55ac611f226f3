"""Sensitivity results kept on disk by content (``disk_cache``): the same sweep of the same model on the same data
with the same code is computed once, then read back in milliseconds (a minilm-topics sweep takes minutes).

    res, hit = cached_sensitivity(wl.model, wl, "prune", levels=(0.3, 0.5, 0.7, 0.9, 0.95))
    lookup(wl.model, wl, "prune")          # the stored result or None, without computing anything

The key: the model's tensors, the calibration split, the metric, every setting of the sweep (technique, levels,
targets, ignore, classifier, heads) and the source of the code that computes it. Entries are JSON inside a
hash-checked safetensors file (never pickle); a damaged one is recomputed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import disk_cache, length_groups, prefix_cache
from .prune import importance, lowrank, probes
from .quantize import _common as quant_common
from .sensitivity import Sensitivity, Sweep, _check_levels, sensitivity

VERSION = 1
_CACHE = disk_cache.DiskCache("sensitivity")


def sensitivity_key(model: nn.Module, data: Any, technique: str = "prune", levels=None,
                    targets: list[str] | None = None, ignore: tuple[str, ...] | list[str] = (),
                    include_classifier: bool = False, heads: bool | None = None) -> str:
    """The disk-cache key of a sweep (see the module docstring)."""
    calib = data.calib
    metric = getattr(data, "metric", None)
    fn = getattr(metric, "fn", None)
    code = [sensitivity, prefix_cache, length_groups, importance, lowrank, probes, quant_common, type(model)]
    if fn is not None and hasattr(fn, "__code__"):
        code.append(fn)
    return disk_cache.digest(
        VERSION, technique, list(_check_levels(technique, levels)), list(targets or []), list(ignore),
        bool(include_classifier), heads, getattr(metric, "name", None), getattr(fn, "__qualname__", repr(fn)),
        disk_cache.model_digest(model), disk_cache.tensor_digest([calib.x, calib.y]),
        disk_cache.source_digest(*code))


def lookup(model: nn.Module, data: Any, technique: Sweep = "prune", **kw) -> Sensitivity | None:
    """The stored result of this sweep, or None (nothing is computed)."""
    return lookup_key(sensitivity_key(model, data, technique, **_key_args(kw)))


def lookup_key(key: str) -> Sensitivity | None:
    """The stored result under ``key`` (``sensitivity_key``), or None."""
    got = _CACHE.load(key)
    if got is None:
        return None
    try:
        return Sensitivity.model_validate(got[1])
    except Exception:  # an entry of an older shape: a miss
        return None


def _key_args(kw: dict) -> dict:
    return {k: kw[k] for k in ("levels", "targets", "ignore", "include_classifier", "heads") if k in kw}


def cached_sensitivity(model: nn.Module, data: Any, technique: Sweep = "prune", **kw) -> tuple[Sensitivity, bool]:
    """(result, hit): ``sensitivity(model, data, technique, **kw)`` read from the disk cache when it was computed
    before (``seconds`` is then the original sweep's), else computed and stored."""
    hit = lookup(model, data, technique, **kw)
    if hit is not None:
        return hit, True
    res = sensitivity(model, data, technique, **kw)
    key = sensitivity_key(model, data, technique, **_key_args(kw))
    _CACHE.save(key, {}, res.to_json_dict())
    return res, False


__all__ = ["cached_sensitivity", "lookup", "lookup_key", "sensitivity_key"]
