"""Weight-only int8 / int4 / int3 of Linear layers with group-wise scales, by round-to-nearest, GPTQ (Frantar et
al. 2022, arXiv:2210.17323) or AWQ (Lin et al. 2023, arXiv:2306.00978): the LLM quantization methods.

Storage is ``Int4Linear``'s (codes packed two per byte, float16 group scales); int8 is ``Int8WeightLinear`` (one
byte per code); int3 is ``Int3Linear``, codes packed eight per three bytes (group 64: 3 + 16/64 = 3.25 bits per
weight). An AWQ layer also stores its per-input scale (``input_scale``, float16). GPTQ and AWQ calibrate on the
workload's calibration split: forward pre-hooks collect each layer's inputs (padding positions left out where the
batch has an ``attention_mask``), sequentially by default: a layer is calibrated on the outputs of the layers
before it already quantized, as in the GPTQ paper. ``engine="onnxruntime"`` ships the same codes and scales as
ONNX Runtime ``MatMulNBits`` nodes (``compression_core.ort_nbits``; int3 in 4-bit nibbles there).

The algorithms are hand-written (``gptq.py``, ``awq.py``): see README "LLM quantization" for why.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .. import inputs as I
from ..errors import CompressionError
from ..io import fold_masks
from ..ort_engine import OrtModule, example_batch
from ..ort_nbits import nbits_proto
from ..technique import StepConfig, StepContext, TechniqueUI, register
from ._common import require_split, resolve_overrides, select_layers, set_submodule
from .awq import awq_scale
from .calibration import collect, execution_order, plain_linear
from .gptq import Hessian, gptq
from .groupwise import QuantizedWeight, clip_search, pack_int3, rtn, unpack_int3
from .int4 import Int4Linear, Int8WeightLinear, _WeightOnlyLinear

MAX_AWQ_ROWS = 4096  # input rows an AWQ grid search evaluates per layer (a fixed subsample beyond that)


# ---------------------------------------------------------------------------------------------------- modules
class Int3Linear(_WeightOnlyLinear):
    """Weight-only int3 Linear: codes in [-4, 3] packed eight per three bytes (uint8 (out, 3 * ceil(padded/8)))."""

    bits = 3

    def _empty_codes(self, rows: int, cols: int) -> torch.Tensor:
        return torch.zeros(rows, math.ceil(cols / 8) * 3, dtype=torch.uint8)

    def _store(self, q: torch.Tensor) -> torch.Tensor:
        return pack_int3(F.pad(q, (0, -q.shape[1] % 8)))  # (out, 3 * ceil(padded / 8))

    def codes(self) -> torch.Tensor:
        return unpack_int3(self.qweight)[:, : self.group_size * self.n_groups]  # (out, padded in)


class _InputScaled:
    """AWQ form of a packed layer: it computes ``x @ (Q / s)^T`` where ``Q`` was quantized as ``W * s``; the
    per-input scale ``s`` is the float16 buffer ``input_scale`` (in,)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("input_scale", torch.ones(self.in_features, dtype=torch.float16))

    def dequantized_weight(self) -> torch.Tensor:
        return super().dequantized_weight() / self.input_scale.float()  # (out, in) / (in,)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", awq input scale"


class AwqInt3Linear(_InputScaled, Int3Linear):
    """``Int3Linear`` with AWQ's per-input scale."""


class AwqInt4Linear(_InputScaled, Int4Linear):
    """``Int4Linear`` with AWQ's per-input scale."""


class AwqInt8Linear(_InputScaled, Int8WeightLinear):
    """``Int8WeightLinear`` with AWQ's per-input scale."""


LAYER_CLASSES = {(3, False): Int3Linear, (4, False): Int4Linear, (8, False): Int8WeightLinear,
                 (3, True): AwqInt3Linear, (4, True): AwqInt4Linear, (8, True): AwqInt8Linear}


def packed_layer(linear: nn.Linear, qw: QuantizedWeight, input_scale: torch.Tensor | None = None) -> _WeightOnlyLinear:
    """The packed module storing ``qw`` (codes and group parameters of ``linear``'s weight) and ``linear``'s bias."""
    cls = LAYER_CLASSES[(qw.bits, input_scale is not None)]
    sym = qw.zero_point is None
    row = linear.in_features + linear.in_features % 2
    mod = cls(linear.in_features, linear.out_features, linear.bias is not None,
              None if qw.group_size >= row else qw.group_size, sym)
    if (mod.group_size, mod.n_groups) != (qw.group_size, qw.scale.shape[1]):
        raise CompressionError(f"packed_layer: groups {qw.group_size} x {qw.scale.shape[1]} do not fit a layer of "
                               f"{linear.in_features} inputs")
    with torch.no_grad():
        mod.qweight.copy_(mod._store(qw.codes))
        mod.scale.copy_(qw.scale)
        if not sym:
            mod.zero_point.copy_(qw.zero_point)
        if input_scale is not None:
            mod.input_scale.copy_(input_scale.half())
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.detach().float())
    return mod


# ----------------------------------------------------------------------------------------------------- config
class WeightOnlyConfig(StepConfig):
    """Weight-only int8/int4/int3 of the selected Linear layers with group-wise scales, by round-to-nearest, GPTQ
    or AWQ (both calibrated on the workload's calibration split); ``overrides`` maps layers to other bit widths."""

    kind: Literal["quantize_weight_only"] = "quantize_weight_only"
    ui = TechniqueUI(family="quantize", label="weight-only int8/int4/int3: RTN, GPTQ, AWQ (real)",
                     layer_types=("Linear", "Conv1D"), storage="int4", order=41)
    bits: Literal[3, 4, 8] = 4
    method: Literal["rtn", "gptq", "awq"] = "rtn"  # rtn needs no data; gptq / awq calibrate (seconds per layer)
    group_size: Literal[16, 32, 64, 128, 256] | None = 64  # None = one scale per output channel
    symmetric: bool = True
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = False
    overrides: dict[str, Literal[3, 4, 8]] = Field(default_factory=dict)
    calib_samples: int = Field(default=128, ge=1, le=4096)  # calibration items (GPTQ / AWQ)
    sequential: bool = True  # calibrate each layer on the already-quantized layers' outputs
    damp: float = Field(default=0.01, gt=0, le=1)  # GPTQ: fraction of mean(diag H) added to H's diagonal
    act_order: bool = False  # GPTQ: visit columns by decreasing diag(H) (static groups)
    block: int = Field(default=128, ge=1, le=4096)  # GPTQ: lazy-batch columns
    grid: int = Field(default=20, ge=1, le=100)  # AWQ: alpha in {0, 1/grid, ..., 1}
    clip: bool = True  # AWQ: then each group's clipping ratio (0.5-1 of its range) on the layer output error
    engine: Literal["torch", "onnxruntime"] = "torch"  # onnxruntime: the same codes as MatMulNBits nodes


def weight_only_bits(model: nn.Module, cfg: WeightOnlyConfig, ctx: StepContext) -> dict[str, int]:
    """{Linear/Conv1D layer: bits} that ``cfg`` selects (overrides included); one line when nothing is selected."""
    fold_masks(model)
    names = select_layers(model, cfg, ctx, (nn.Linear,), "quantize_weight_only")
    bits = {n: cfg.bits for n in names}
    bits.update(resolve_overrides(model, cfg.overrides, (nn.Linear,), "quantize_weight_only"))
    if not bits:
        raise CompressionError("targets: quantize_weight_only selected no Linear/Conv1D layer; name some in targets")
    for name in bits:  # a Conv1D is quantized (and exported as MatMul) as the equivalent Linear
        set_submodule(model, name, plain_linear(model.get_submodule(name)))
    return bits


# ------------------------------------------------------------------------------------------------ calibration
class _Inputs:
    """One layer's calibration inputs: the Hessian, mean |x| per input and (for AWQ) the rows themselves."""

    def __init__(self, n_in: int, keep_rows: bool) -> None:
        self.hessian = Hessian(n_in)
        self.abs_sum = torch.zeros(n_in, dtype=torch.float64)
        self.rows: list[torch.Tensor] | None = [] if keep_rows else None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        self.hessian.add(x)
        self.abs_sum += x.abs().sum(0).double()
        if self.rows is not None:
            self.rows.append(x)

    @property
    def n(self) -> int:
        return self.hessian.rows

    def x(self, seed: int) -> torch.Tensor:
        x = torch.cat(self.rows) if self.rows else torch.zeros(0, self.abs_sum.numel())
        if x.shape[0] > MAX_AWQ_ROWS:
            idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:MAX_AWQ_ROWS]
            x = x[idx.sort().values]
        return x


def _relative_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """||X (W - W_hat)^T|| / ||X W^T|| from the Hessian H = 2 X^T X / n alone."""
    d = (w - w_hat).double()
    num = float(torch.einsum("oi,ij,oj->", d, h, d))
    den = float(torch.einsum("oi,ij,oj->", w.double(), h, w.double()))
    return math.sqrt(max(num, 0.0) / max(den, 1e-30))


def _quantize_layer(linear: nn.Linear, bits: int, cfg: WeightOnlyConfig, inputs: _Inputs | None,
                    seed: int) -> tuple[_WeightOnlyLinear, float | None, float | None]:
    """(packed layer, its relative output error, round-to-nearest's) for one Linear."""
    w = linear.weight.detach().float()  # (out, in)
    base = rtn(w, bits, cfg.group_size, cfg.symmetric)
    if cfg.method == "rtn" or inputs is None or inputs.n == 0:
        err = _relative_error(w, base.dequantize(), inputs.hessian.h) if inputs is not None and inputs.n else None
        ones = torch.ones(w.shape[1]) if cfg.method == "awq" else None  # the AWQ layer type, scale 1
        return packed_layer(linear, base, input_scale=ones), err, err
    h = inputs.hessian.h
    rtn_err = _relative_error(w, base.dequantize(), h)
    if cfg.method == "gptq":
        qw = gptq(w, h.float(), bits, cfg.group_size, cfg.symmetric, cfg.damp, cfg.block, cfg.act_order)
        return packed_layer(linear, qw), _relative_error(w, qw.dequantize(), h), rtn_err
    act = (inputs.abs_sum / inputs.n).float()
    s, _, _ = awq_scale(w, inputs.x(seed), bits, cfg.group_size, cfg.symmetric, cfg.grid, act=act)
    sf = s.float()
    clip = None
    if cfg.clip:  # the scaled layer sees inputs x / s: its Hessian is H / (s s^T)
        clip = clip_search(w * sf, h / torch.outer(sf, sf).double(), bits, cfg.group_size, cfg.symmetric)
    qw = rtn(w * sf, bits, cfg.group_size, cfg.symmetric, clip)
    mod = packed_layer(linear, qw, input_scale=s)
    return mod, _relative_error(w, mod.dequantized_weight(), h), rtn_err


def _empty_layer(linear: nn.Linear, bits: int, cfg: WeightOnlyConfig) -> _WeightOnlyLinear:
    """The packed module's structure (codes zero) for a replay; the bundle's state_dict fills it."""
    cls = LAYER_CLASSES[(bits, cfg.method == "awq")]
    return cls(linear.in_features, linear.out_features, linear.bias is not None, cfg.group_size, cfg.symmetric)


# ---------------------------------------------------------------------------------------------------- handler
@register(WeightOnlyConfig)
def _weight_only(model: nn.Module, cfg: WeightOnlyConfig, ctx: StepContext) -> nn.Module:
    if ctx.replay and cfg.engine == "onnxruntime":
        return OrtModule(storage="int4" if cfg.bits < 8 else "int8", bits=cfg.bits)
    bits = weight_only_bits(model, cfg, ctx)
    model.eval()
    if ctx.replay:
        for name, b in bits.items():
            set_submodule(model, name, _empty_layer(model.get_submodule(name), b, cfg))
        return model
    errs: list[tuple[float, float]] = []
    n_rows = 0
    if cfg.method == "rtn":
        for i, (name, b) in enumerate(bits.items()):
            set_submodule(model, name, packed_layer(model.get_submodule(name), rtn(
                model.get_submodule(name).weight.detach().float(), b, cfg.group_size, cfg.symmetric)))
            ctx.report((i + 1) / len(bits), f"{name}: int{b} round-to-nearest")
    else:
        calib = require_split(ctx, "calib", "method", f"method={cfg.method!r}")
        n_items = min(cfg.calib_samples, len(calib))
        stages, unused, once = execution_order(model, list(bits), I.head(calib.x, min(2, len(calib))))
        if not cfg.sequential:
            stages = [[n for s in stages for n in s]]
        done = 0
        for stage in stages:
            keep = cfg.method == "awq"
            got = collect(model, stage, calib.x, n_items, lambda m: _Inputs(m.in_features, keep),
                          stop_early=once and cfg.sequential)
            for name in stage:
                mod, err, rtn_err = _quantize_layer(model.get_submodule(name), bits[name], cfg, got[name], ctx.seed)
                set_submodule(model, name, mod)
                n_rows = max(n_rows, got[name].n)
                if err is not None:
                    errs.append((err, rtn_err))
                done += 1
                ctx.report(done / len(bits), f"{name}: int{bits[name]} {cfg.method}")
        for name in unused:  # never called on the calibration data: nothing to calibrate on
            set_submodule(model, name, _quantize_layer(model.get_submodule(name), bits[name], cfg, None, ctx.seed)[0])
        if unused:
            ctx.note(f"{len(unused)} layer(s) never ran on the calibration data ({', '.join(unused[:3])}): "
                     "round-to-nearest there")
        if errs:
            ctx.note(f"{cfg.method}: {len(bits)} layers on {n_items} calibration items ({n_rows:,} input rows); mean "
                     f"layer output error {sum(e for e, _ in errs) / len(errs):.4f} vs round-to-nearest "
                     f"{sum(r for _, r in errs) / len(errs):.4f}")
    if cfg.engine == "onnxruntime":
        ctx.report(0.95, "ONNX Runtime MatMulNBits with the same codes")
        proto = nbits_proto(model, example_batch(ctx.data))
        return OrtModule(proto.SerializeToString(), storage="int4" if cfg.bits < 8 else "int8", bits=cfg.bits,
                         source=model)
    return model


__all__ = ["AwqInt3Linear", "AwqInt4Linear", "AwqInt8Linear", "Int3Linear", "LAYER_CLASSES", "WeightOnlyConfig",
           "packed_layer", "weight_only_bits"]
