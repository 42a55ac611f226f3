"""Advisories: one line, when a result is not what its number suggests, saying what helps.

Why: an untuned structured prune can take a small CNN to 10 % (chance for ten classes) and the report printed the
number and nothing else. ``collapse`` is the one rule for that; ``apply_recipe`` (``RecipeResult.advisories``),
the CLI's ``apply`` (human and ``--json``) and the dashboard's Explore page all call it.

A result has collapsed when (``CollapseRule``, defaults changeable):
- an accuracy-like metric (a higher-is-better fraction of a classifier's outputs, e.g. accuracy or agreement)
  falls below ``chance_factor`` x chance, chance being 1 / number of classes; or
- a fraction metric falls by more than ``max_drop_points`` percentage points; or
- a lower-is-better metric (perplexity, a loss) more than multiplies by ``max_factor`` (doubles, by default); a
  higher-is-better metric that is not a fraction falls below 1 / ``max_factor`` of its value before.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from . import inputs as I


@dataclass(frozen=True)
class CollapseRule:
    """When a result counts as collapsed (see the module docstring)."""

    chance_factor: float = 1.5  # below this many times chance (accuracy-like metrics)
    max_drop_points: float = 20.0  # a fall of more than this many percentage points (fraction metrics)
    max_factor: float = 2.0  # lower-is-better: more than this many times its value before


DEFAULT_RULE = CollapseRule()

_CLASSES: "weakref.WeakKeyDictionary[Any, int | None]" = weakref.WeakKeyDictionary()


def num_classes(workload: Any) -> int | None:
    """Classes of a workload's classifier: ``info["num_classes"]`` where given, else the width of the model's output
    on one test item; None when the output is not one score per class."""
    info = getattr(workload, "info", None) or {}
    if info.get("num_classes"):
        return int(info["num_classes"])
    try:
        return _CLASSES[workload]
    except (KeyError, TypeError):
        pass
    try:
        out = I.predict(workload.model, I.take(workload.test.x, slice(0, 1)))
        n = int(out.shape[-1]) if out.dim() == 2 and out.shape[-1] > 1 else None
    except Exception:  # the forward itself is checked when the workload is loaded; here it only informs
        n = None
    try:
        _CLASSES[workload] = n
    except TypeError:
        pass
    return n


def higher_is_better(metric: Any) -> bool:
    """The metric's direction (``Metric.higher_is_better``; True for anything without one)."""
    return bool(getattr(metric, "higher_is_better", True))


def chance(workload: Any) -> float | None:
    """Chance level of an accuracy-like metric (1 / classes), else None."""
    metric = getattr(workload, "metric", None)
    if not getattr(metric, "percent", True) or not higher_is_better(metric):
        return None
    n = num_classes(workload)
    return 1.0 / n if n and n > 1 else None


def _value(x: Any) -> float | None:
    """A metric value from a number, a ``ModelStats`` (``.accuracy``) or its dict form."""
    if x is None:
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, dict):
        return None if x.get("accuracy") is None else float(x["accuracy"])
    v = getattr(x, "accuracy", None)
    return None if v is None else float(v)


def _text(v: float, percent: bool) -> str:
    return f"{v * 100:.2f} %" if percent else f"{v:.4g}"


def collapse(before: Any, after: Any, workload: Any, rule: CollapseRule = DEFAULT_RULE) -> str | None:
    """One line when ``after`` (the compressed model's metric: a number, ``ModelStats`` or its dict) has collapsed
    against ``before`` (the baseline's; None: only the chance rule applies) on ``workload``'s metric, saying what
    helps; None otherwise."""
    a, b = _value(after), _value(before)
    if a is None:
        return None
    metric = getattr(workload, "metric", None)
    name = getattr(metric, "name", "accuracy")
    percent = bool(getattr(metric, "percent", True))
    up = higher_is_better(metric)
    why = None
    if up:
        c = chance(workload)
        if c is not None and a < rule.chance_factor * c:
            why = (f"below {rule.chance_factor:g}x chance, which is {_text(c, True)} for {round(1 / c)} classes: "
                   "barely better than guessing")
        elif b is not None and percent and (b - a) * 100 > rule.max_drop_points:
            why = f"down {(b - a) * 100:.1f} points, more than {rule.max_drop_points:g}"
        elif b is not None and not percent and b > 0 and a < b / rule.max_factor:
            why = f"below 1/{rule.max_factor:g} of its value before"
    elif b is not None and b > 0 and a > rule.max_factor * b:
        why = f"{a / b:.1f}x its value before, more than {rule.max_factor:g}x (lower is better)"
    if why is None:
        return None
    ref = getattr(workload, "reference", None) or getattr(workload, "name", "MODEL")
    was = f"{_text(b, percent)} -> " if b is not None else ""
    return (f"collapsed: {name} {was}{_text(a, percent)} ({why}); what helps: fine-tune after compressing (a "
            f"`finetune` step), a lower setting, or sparing the layers the sensitivity sweep shows are fragile "
            f"(`compression-lab sensitivity --model {ref}`, or the Sensitivity page)")


__all__ = ["CollapseRule", "DEFAULT_RULE", "chance", "collapse", "higher_is_better", "num_classes"]
