"""Calibration inputs of chosen layers, read with forward pre-hooks while the workload's calibration items run
through the model: what GPTQ, AWQ and SmoothQuant compute their statistics from.

Rows are the layer's input vectors (``(..., in)`` flattened); when a batch carries an ``attention_mask`` of the
input's (batch, tokens) shape, padding positions are left out. ``execution_order`` groups layers into stages of
consecutive layers that read the same tensor (query/key/value), so a method may quantize stage by stage on the
outputs of the layers already quantized; a stage's pass stops at its last layer when every layer runs once per
forward.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

import torch
from torch import nn

from .. import inputs as I


class Accumulator(Protocol):
    def add(self, rows: torch.Tensor) -> None: ...


class _Stop(Exception):
    """Raised by a hook once every layer of a stage has seen this batch: the rest of the forward is not needed."""


def batches(x, n: int, size: int = 32) -> Iterator:
    """The first ``n`` items of ``x`` in batches of ``size``."""
    x = I.head(x, min(n, I.n_items(x)))
    for i in range(0, I.n_items(x), size):
        yield I.take(x, slice(i, i + size))


def run(model: nn.Module, xb) -> None:
    """``model`` on batch ``xb`` (keyword arguments for a dict), the output ignored."""
    xb = I.cast_floats(xb, I.input_dtype(model))
    model(**xb) if I.is_dict(xb) else model(xb)


def rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A layer input (..., in) as rows (n, in), padding positions left out when the batch's attention mask fits."""
    if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return x[mask.bool()]  # (real tokens, in)
    return x.reshape(-1, x.shape[-1])  # (n, in)


def plain_linear(module: nn.Module) -> nn.Module:
    """``module`` if it is an nn.Linear, else the exactly equivalent nn.Linear of a transformers ``Conv1D`` (weight
    (in, out), ``y = x @ W + b``)."""
    if isinstance(module, nn.Linear) or type(module).__name__ != "Conv1D":
        return module
    w = module.weight.detach()  # (in, out)
    lin = nn.Linear(w.shape[0], w.shape[1], bias=module.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w.t())
        if module.bias is not None:
            lin.bias.copy_(module.bias.detach())
    return lin


@torch.no_grad()
def execution_order(model: nn.Module, names: list[str], xb) -> tuple[list[list[str]], list[str], bool]:
    """(stages: consecutive layers that read the same input tensor, e.g. query/key/value; layers never called;
    whether every layer runs once per forward, so a stage's pass may stop after its last layer)."""
    calls: list[tuple[str, tuple]] = []
    handles = []
    for name in names:
        def hook(mod, args, name=name):
            x = args[0] if args else None
            key = (x.data_ptr(), tuple(x.shape), x.stride()) if isinstance(x, torch.Tensor) else (id(x),)
            calls.append((name, key))
        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        run(model, xb)
    finally:
        for h in handles:
            h.remove()
    counts = {n: sum(1 for c, _ in calls if c == n) for n in names}
    stages: list[list[str]] = []
    last_key = None
    seen: set[str] = set()
    for name, key in calls:
        if name in seen:
            continue
        seen.add(name)
        if stages and key == last_key:
            stages[-1].append(name)
        else:
            stages.append([name])
        last_key = key
    return stages, [n for n in names if counts[n] == 0], all(c == 1 for c in counts.values())


@torch.no_grad()
def collect(model: nn.Module, stage: list[str], calib_x, n_items: int, make: Callable[[nn.Module], Accumulator],
            stop_early: bool = False) -> dict[str, Accumulator]:
    """Run the first ``n_items`` calibration items through ``model``; each ``stage`` layer's input rows go to its
    accumulator (``make(layer)``). ``stop_early``: end each forward once every stage layer has run."""
    got = {n: make(model.get_submodule(n)) for n in stage}
    state: dict = {"mask": None, "seen": set()}

    def hook_for(name):
        def hook(mod, args):
            got[name].add(rows(args[0], state["mask"]))
            state["seen"].add(name)
            if stop_early and len(state["seen"]) == len(stage):
                raise _Stop
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in stage]
    try:
        for xb in batches(calib_x, n_items):
            state["mask"] = xb.get("attention_mask") if I.is_dict(xb) else None
            state["seen"] = set()
            try:
                run(model, xb)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return got


__all__ = ["Accumulator", "batches", "collect", "execution_order", "plain_linear", "rows", "run"]
