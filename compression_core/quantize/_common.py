"""Shared pieces of the quantize family: layer selection, per-layer bit overrides, module swapping, the exact
integer arithmetic of uniform quantization (``q = clamp(round(x / s) + z)``, ``dq = (q - z) * s``)."""

from __future__ import annotations


import torch
from torch import nn

from ..errors import CompressionError
from ..linear_like import convert_to_linear, is_conv1d, leave_tied, say, tied_note, type_names, with_conv1d
from ..targets import _matches, check_pattern, classifier_name, resolve_targets
from ..technique import StepContext
from ..measure import size_bytes


# ---------------------------------------------------------------------------------------------- arithmetic
def qrange(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """Integer range of a ``bits``-bit code: signed [-2^(b-1), 2^(b-1)-1] or unsigned [0, 2^b-1]."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def symmetric_scale(amax: torch.Tensor, bits: int, eps: float = 1e-12) -> torch.Tensor:
    """Scale that maps [-amax, amax] onto the symmetric grid ``[-qmax, qmax]`` (qmax = 2^(b-1)-1)."""
    return amax.clamp(min=eps) / qrange(bits)[1]


def affine_params(lo: torch.Tensor, hi: torch.Tensor, bits: int, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) of an asymmetric grid [0, 2^b-1] covering [min(lo, 0), max(hi, 0)] (zero exact)."""
    qmin, qmax = qrange(bits, symmetric=False)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=eps)
    zp = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zp


def quantize_values(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zp, qmin, qmax)`` (round half to even, like torch's kernels)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize_values(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int) -> torch.Tensor:
    return (q - zero_point) * scale


def fake_quantize_weight(w: torch.Tensor, bits: int, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dq(q(w)), scale) with symmetric ``bits``-bit codes, one scale per output channel (dim 0) or per tensor."""
    flat = w.detach().reshape(w.shape[0], -1)  # (out, fan_in)
    amax = flat.abs().amax(dim=1, keepdim=True) if per_channel else flat.abs().amax().reshape(1, 1)
    scale = symmetric_scale(amax, bits)  # (out, 1) or (1, 1)
    qmin, qmax = qrange(bits)
    deq = dequantize_values(quantize_values(flat, scale, 0, qmin, qmax), scale, 0)
    return deq.reshape(w.shape), scale


# ------------------------------------------------------------------------------------------------ selection
_READS_CHILD_WEIGHTS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def select_layers(model: nn.Module, cfg, ctx: StepContext, types: tuple[type[nn.Module], ...], technique: str,
                  swapped: bool = False) -> list[str]:
    """Names chosen by ``cfg.targets``/``cfg.ignore``/``cfg.include_classifier`` among ``types``; a targeted layer
    of another type is a one-line error naming what the technique supports. ``swapped``: the technique replaces
    the layer by a module without a ``weight`` tensor, so layers whose parent reads ``child.weight`` itself
    (nn.TransformerEncoderLayer's fast path) stay float too. A technique that takes nn.Linear takes transformers'
    Conv1D too (``as_linear`` turns the chosen ones into nn.Linear). A layer whose weight is tied to another
    module (an output layer sharing the embedding table) stays float, and is refused when named: quantizing one of
    them would store the matrix twice (``quantize_embedding`` quantizes an embedding and its tied output together)."""
    types = with_conv1d(types)
    allowed = type_names(types)
    modules = dict(model.named_modules())
    for t in cfg.targets or ():
        if not t.startswith("re:") and t in modules and not isinstance(modules[t], types):
            raise CompressionError(
                f"targets: layer {t!r} is {type(modules[t]).__name__}; {technique} supports {allowed} layers")
    names = resolve_targets(model, cfg.targets, cfg.ignore, types=types, classifier=classifier_name(model, ctx),
                            include_classifier=cfg.include_classifier, field="targets")
    # torch's marker for a Linear its parent never calls (nn.MultiheadAttention reads out_proj.weight directly):
    # a swapped or wrapped module there breaks the parent, so it stays float unless named, and named it is refused
    unused = [n for n in names if isinstance(modules[n], nn.modules.linear.NonDynamicallyQuantizableLinear)
              or (swapped and isinstance(modules.get(n.rpartition(".")[0]), _READS_CHILD_WEIGHTS))]
    named = [n for n in unused if cfg.targets and n in cfg.targets]
    if named:
        raise CompressionError(f"targets: layer {named[0]!r} has its weight read directly by its parent "
                               f"{named[0].rpartition('.')[0] or 'model'!r}, so {technique} cannot replace it; leave "
                               "it out (or use engine='onnxruntime')")
    if unused:
        ctx.report(0.0, f"left float: {', '.join(unused)} (their parent reads their weights directly)")
    names = [n for n in names if n not in unused]
    names, tied = leave_tied(model, names, cfg.targets, technique,
                             "quantize_embedding quantizes an embedding and its tied output layer together")
    if tied:
        say(ctx, f"left float: {tied_note(model, tied)}: tied weights are quantized together or not at all")
    return names


def as_linear(model: nn.Module, names: list[str]) -> list[str]:
    """Turn the Conv1D layers among ``names`` into equivalent nn.Linear layers in place (what torch.ao's int8
    modules, the int4 packing and the ONNX export as MatMul take); returns the names converted."""
    return convert_to_linear(model, [n for n in names if is_conv1d(model.get_submodule(n))])


def resolve_overrides(model: nn.Module, overrides: dict[str, int], types: tuple[type[nn.Module], ...],
                      technique: str) -> dict[str, int]:
    """Layer name -> bits for each override key (exact name or ``re:`` pattern; the first matching key wins)."""
    types = with_conv1d(types)
    candidates = [n for n, m in model.named_modules() if n and isinstance(m, types)]
    modules = dict(model.named_modules())
    out: dict[str, int] = {}
    for key, bits in overrides.items():
        check_pattern(key, "overrides")
        if not key.startswith("re:") and key in modules and not isinstance(modules[key], types):
            raise CompressionError(f"overrides: layer {key!r} is {type(modules[key]).__name__}; {technique} supports "
                                   f"{type_names(types)} layers")
        hits = [n for n in candidates if _matches(n, key)]
        if not hits:
            raise CompressionError(f"overrides: no layer matches {key!r}; layers are: {', '.join(candidates)}")
        for h in hits:
            out.setdefault(h, bits)
    return out


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def require_split(ctx: StepContext, split: str, field: str, why: str) -> object:
    """``ctx.data.<split>`` or a one-line error saying the technique needs it."""
    data = getattr(ctx.data, split, None) if ctx.data is not None else None
    if data is None or len(data) == 0:
        raise CompressionError(f"{field}: {why} needs the workload's {split} split; give {split}=(inputs, targets) "
                               f"in the Workload, e.g. quantize(model, cfg, workload)")
    return data




def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Where each weight parameter is exactly zero (pruned), by parameter name; only weights with zeros."""
    return {n: p == 0 for n, p in model.named_parameters() if n.endswith("weight") and bool((p == 0).any())}


def rezero(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the weights recorded by ``zero_masks`` again (after an optimiser step)."""
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_parameter(name)[mask] = 0


def refuse_if_not_smaller(before: nn.Module | int, after: nn.Module, quantized: list[str], technique: str,
                          hint: str) -> None:
    """A one-line refusal when the quantized model's file is not smaller than the float one: the layers it could
    quantize hold too few of the weights (a recurrent or attention block, BatchNorms and embeddings stay float)
    and the scales and packing cost more than int8 saves. ``before``: the float model or its size in bytes."""
    b = before if isinstance(before, int) else size_bytes(before)
    a = size_bytes(after)
    if a >= b:
        shown = ", ".join(quantized[:4]) + (f" and {len(quantized) - 4} more" if len(quantized) > 4 else "")
        raise CompressionError(f"targets: {technique} can make only {shown} int8 here and the file would not shrink "
                               f"({b:,} -> {a:,} bytes): the rest of the weights stay float; {hint}")
