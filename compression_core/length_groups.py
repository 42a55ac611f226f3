"""Right-padded token batches split into groups of similar length, each trimmed to its own longest row.

Why: a tokenizer pads every row of a split to its longest (or a fixed) length, and a transformer spends its time on
every position, padding included: minilm-topics' calibration split is 74 rows padded to 32 tokens, of which 44 % are
real tokens. Run as a few groups of similar length, each cut to its longest row, the same rows cost about half the
Linear work. A sensitivity sweep evaluates the same split hundreds of times, so it pays this once and gains on
every point.

How: only for a dict input (a tokenizer's output) with a 2-D 0/1 ``attention_mask`` whose rows are right-padded
(ones, then zeros); every (rows, positions) tensor of the dict is cut on both axes, any other per-row tensor on rows
only. Rows are sorted by length and split into at most ``max_groups`` runs that minimise the positions computed
(exact dynamic programme over the distinct lengths). Whether the model really ignores padding is NOT assumed: the
caller compares the grouped outputs with one whole-batch forward (``same_outputs``) and uses the groups only when
they agree, so a model that reads padded positions (pooling over every position, a causal LM's per-position
output) is evaluated whole, as before.
"""

from __future__ import annotations

from typing import Any

import torch

from . import inputs as I

MAX_GROUPS = 4
MIN_SAVING = 0.2  # groups only when they save at least this share of the positions


def _lengths(x: Any) -> torch.Tensor | None:
    """Per-row lengths of a right-padded dict input, or None when ``x`` is not one."""
    if not I.is_dict(x) or "attention_mask" not in x:
        return None
    m = x["attention_mask"]
    if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.shape[1] < 2 or m.is_floating_point():
        return None
    if not bool(((m == 0) | (m == 1)).all()) or not bool((m[:, :-1] >= m[:, 1:]).all()):
        return None  # not 0/1, or not right-padded
    rows = m.shape[0]
    for v in x.values():
        if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != rows:
            return None  # something that is not per row: leave the input whole
    return m.sum(1)


def _split(lengths: list[int], max_groups: int) -> list[int]:
    """Sizes of at most ``max_groups`` runs of the sorted ``lengths`` minimising sum(run size * run's longest)."""
    values = sorted(set(lengths))
    count = [sum(1 for v in lengths if v <= u) for u in values]  # rows with length <= values[j]
    n = len(values)
    inf = float("inf")
    # best[g][j]: cost of covering the rows with length <= values[j] by g runs, each ending at a distinct length
    best = [[inf] * n for _ in range(max_groups + 1)]
    cut = [[-1] * n for _ in range(max_groups + 1)]
    for j in range(n):
        best[1][j] = count[j] * values[j]
    for g in range(2, max_groups + 1):
        for j in range(n):
            for i in range(j):  # the last run holds the rows with length in (values[i], values[j]]
                c = best[g - 1][i] + (count[j] - count[i]) * values[j]
                if c < best[g][j]:
                    best[g][j], cut[g][j] = c, i
    g = min(range(1, max_groups + 1), key=lambda k: (best[k][n - 1], k))
    sizes, j = [], n - 1
    while g > 1:
        i = cut[g][j]
        sizes.append(count[j] - count[i])
        j, g = i, g - 1
    sizes.append(count[j])
    return sizes[::-1]


def length_groups(x: Any, max_groups: int | None = None, min_saving: float = MIN_SAVING
                  ) -> list[tuple[torch.Tensor, Any]] | None:
    """[(row indices, the rows of ``x`` cut to their longest), ...] covering every row once, or None when ``x`` is
    not a right-padded token batch or grouping would save less than ``min_saving`` of the positions."""
    lengths = _lengths(x)
    if lengths is None:
        return None
    max_groups = MAX_GROUPS if max_groups is None else max_groups
    rows, width = x["attention_mask"].shape
    order = torch.argsort(lengths, stable=True)
    sizes = _split(lengths[order].tolist(), max_groups)
    groups, start, cost = [], 0, 0
    for size in sizes:
        idx = order[start:start + size]
        start += size
        keep = max(1, int(lengths[idx].max()))
        cost += size * keep
        groups.append((idx, {k: (v[idx][:, :keep] if v.dim() >= 2 and v.shape[1] == width else v[idx])
                             for k, v in x.items()}))
    if cost > (1 - min_saving) * rows * width:
        return None
    return groups


def assemble(groups: list[tuple[torch.Tensor, Any]], outs: list[torch.Tensor]) -> torch.Tensor:
    """The groups' outputs put back in the rows' original order."""
    rows = sum(len(idx) for idx, _ in groups)
    full = outs[0].new_empty((rows, *outs[0].shape[1:]))
    for (idx, _), o in zip(groups, outs):
        full[idx] = o
    return full


def same_outputs(groups: list[tuple[torch.Tensor, Any]], outs: list[torch.Tensor], whole: torch.Tensor,
                 rtol: float = 1e-3) -> bool:
    """True when every group's output has the whole batch's per-row shape and the assembled outputs equal
    ``whole`` within float rounding (``rtol`` of the largest output): the model ignores the padded positions."""
    if any(o.shape[1:] != whole.shape[1:] or o.shape[0] != len(idx) for (idx, _), o in zip(groups, outs)):
        return False
    got = assemble(groups, outs).float()
    want = whole.float()
    tol = rtol * max(1.0, float(want.abs().max()))
    return bool(torch.isfinite(got).all()) and float((got - want).abs().max()) <= tol


__all__ = ["MAX_GROUPS", "MIN_SAVING", "assemble", "length_groups", "same_outputs"]
