"""Layer targeting as data: exact module names or ``re:`` patterns, minus an ``ignore`` list.

The sample model's classifier is left alone by default (``include_classifier=False``): pruning its outputs
removes classes, and quantizing it costs the most accuracy per byte saved.
"""

from __future__ import annotations

import re
from typing import Iterable

from torch import nn

from .errors import CompressionError
from .linear_like import is_linear_like, type_names, with_conv1d


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern


def check_pattern(pattern: str, field: str = "targets") -> None:
    """One-line error for a malformed ``re:`` pattern."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as e:
            raise CompressionError(f"{field}: bad regular expression {pattern!r}: {e}") from None


def classifier_name(model: nn.Module, ctx=None) -> str | None:
    """The workload's classifier (``ctx.data.classifier``), or the last Linear (or Conv1D) layer in module order."""
    wl = getattr(ctx, "data", None) if ctx is not None else None
    given = getattr(wl, "classifier", None)
    if isinstance(given, str) and given:
        return given
    names = [n for n, m in model.named_modules() if is_linear_like(m)]
    return names[-1] if names else None


def resolve_targets(
    model: nn.Module,
    targets: Iterable[str] | None,
    ignore: Iterable[str] = (),
    types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d),
    classifier: str | None = None,
    include_classifier: bool = False,
    field: str = "targets",
) -> list[str]:
    """Names of the modules of ``types`` selected by ``targets`` (None = all of them) minus ``ignore``.

    An exact name that is not a module of the allowed types, or a pattern that matches nothing, is a one-line
    error naming the field and the valid layer names. A technique that takes ``nn.Linear`` also takes transformers'
    ``Conv1D`` (GPT-2's linear layers, ``compression_core.linear_like``).
    """
    types = with_conv1d(types)
    candidates = [n for n, m in model.named_modules() if n and isinstance(m, types)]
    valid = ", ".join(candidates)
    if targets is None:
        chosen = list(candidates)
    else:
        chosen = []
        for t in targets:
            check_pattern(t, field)
            hits = [n for n in candidates if _matches(n, t)]
            if not hits:
                kind = "pattern matches no" if t.startswith("re:") else "unknown"
                allowed = type_names(types)
                raise CompressionError(f"{field}: {kind} layer {t!r}; {allowed} layers are: {valid}")
            chosen += [h for h in hits if h not in chosen]
    for pattern in ignore:
        check_pattern(pattern, "ignore")
    chosen = [n for n in chosen if not any(_matches(n, p) for p in ignore)]
    if classifier is not None and not include_classifier:
        chosen = [n for n in chosen if n != classifier]
    return chosen
