"""Weight-only int4 with real storage: two 4-bit codes per byte, per-channel or group-wise scales, dequantized at
run time (the weight-only scheme of GPTQ/AWQ-style LLM quantization without their error correction: Frantar et
al. 2023, "GPTQ"; Lin et al. 2024, "AWQ"; here plain round-to-nearest).

No torch library stores int4 two per byte on CPU here (FACTS.md), so the packing is ours: ``pack_int4``/
``unpack_int4`` are the low-level functions, ``Int4Linear`` the module, ``Int4Config`` the model-level transform.
Dequantizing on every call makes it slower than fp32; ``Int4Config(engine="onnxruntime")`` realises the same
layers as ONNX Runtime's ``MatMulNBits`` int4 kernel instead (a file of the same size, faster than fp32), and a
torch-packed model deploys there too (``compression_core.ort_deploy.deploy_proto``). Scales are
stored in float16 so that the file is about 1/8 of fp32 (group 64: 4 + 16/64 = 4.25 bits per weight). Per-layer
``overrides`` may keep chosen layers at 8 bits (``Int8WeightLinear``), e.g. the first and last layer.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import CompressionError
from ..io import fold_masks
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ..ort_engine import OrtModule, ort_int4_step
from ._common import (affine_params, as_linear, qrange, quantize_values, resolve_overrides, select_layers,
                      set_submodule)

_FP16_TINY = 2.0**-14  # smallest normal float16: scales never underflow to zero
# byte -> (low nibble, high nibble) as signed floats, for run-time dequantization of packed codes
_NIBBLE_LUT = torch.tensor([[((b & 0xF) ^ 8) - 8, ((b >> 4) ^ 8) - 8] for b in range(256)], dtype=torch.float32)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack signed 4-bit codes (integers in [-8, 7], last dim even) two per byte: (..., n) -> uint8 (..., n/2).

    Element ``2i`` goes to the low nibble and ``2i+1`` to the high nibble of byte ``i`` (two's complement).
    """
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4: last dimension must be even, got {q.shape[-1]}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("pack_int4: codes must lie in [-8, 7]")
    u = q.to(torch.int16) & 0xF  # two's complement nibbles (..., n)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).to(torch.uint8)  # (..., n/2)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_int4``: uint8 (..., m) -> int8 codes in [-8, 7] (..., 2m)."""
    p = packed.to(torch.int16)
    nibbles = torch.stack([p & 0xF, p >> 4], dim=-1)  # (..., m, 2)
    signed = (nibbles ^ 8) - 8  # sign-extend 4-bit two's complement
    return signed.reshape(*packed.shape[:-1], packed.shape[-1] * 2).to(torch.int8)  # (..., 2m)


def _group(in_features: int, group_size: int | None) -> tuple[int, int]:
    """(effective group size, number of groups): per channel = one even-sized group per row."""
    row = in_features + in_features % 2
    g = row if group_size is None else min(group_size, row)
    return g, math.ceil(in_features / g)


class _WeightOnlyLinear(nn.Module):
    """Linear layer whose weight is stored as integer codes with group-wise float16 scales (and zero points)."""

    bits: int = 0

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int | None, symmetric: bool):
        super().__init__()
        self.in_features, self.out_features, self.symmetric = in_features, out_features, symmetric
        self.group_size, self.n_groups = _group(in_features, group_size)
        padded = self.group_size * self.n_groups
        self.register_buffer("qweight", self._empty_codes(out_features, padded))
        self.register_buffer("scale", torch.ones(out_features, self.n_groups, dtype=torch.float16))
        if symmetric:
            self.zero_point = None
        else:
            self.register_buffer("zero_point", torch.zeros(out_features, self.n_groups, dtype=torch.int8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def _empty_codes(self, rows: int, cols: int) -> torch.Tensor:
        raise NotImplementedError

    def _store(self, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def codes(self) -> torch.Tensor:
        """Signed integer codes (out, padded in) as int8."""
        raise NotImplementedError

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int | None, symmetric: bool) -> "_WeightOnlyLinear":
        w = linear.weight.detach().float()  # (out, in); pruning masks already applied
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, symmetric)
        padded = mod.group_size * mod.n_groups
        wp = F.pad(w, (0, padded - w.shape[1])).reshape(w.shape[0], mod.n_groups, mod.group_size)  # (out, G, g)
        if symmetric:
            qmin, qmax = qrange(cls.bits)
            scale = (wp.abs().amax(dim=2) / qmax).clamp(min=_FP16_TINY).half()  # (out, G)
            zp = torch.zeros_like(scale, dtype=torch.int8)
        else:  # unsigned grid shifted into the signed range: q_s = q_u - 2^(b-1), zp_s = zp_u - 2^(b-1)
            qmin, qmax = qrange(cls.bits)
            s, z = affine_params(wp.amin(dim=2), wp.amax(dim=2), cls.bits, eps=_FP16_TINY)
            scale = s.half()
            zp = (z - 2 ** (cls.bits - 1)).to(torch.int8)
        q = quantize_values(wp, scale.float().unsqueeze(2), zp.float().unsqueeze(2), qmin, qmax)  # (out, G, g)
        mod.qweight.copy_(mod._store(q.reshape(w.shape[0], padded).to(torch.int8)))
        mod.scale.copy_(scale)
        if not symmetric:
            mod.zero_point.copy_(zp)
        if linear.bias is not None:
            mod.bias.data.copy_(linear.bias.detach().float())
        return mod

    def float_codes(self) -> torch.Tensor:
        """The codes as float32 (out, padded in)."""
        return self.codes().float()

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight (out, in) the layer computes with: (codes - zero_point) x scale, per group."""
        q = self.float_codes().reshape(self.out_features, self.n_groups, self.group_size)  # (out, G, g)
        if self.zero_point is not None:
            q = q - self.zero_point.float().unsqueeze(2)
        w = (q * self.scale.float().unsqueeze(2)).reshape(self.out_features, -1)  # (out, padded in)
        # contiguous: F.linear on a sliced (strided) weight is 2-4x slower here
        return w if w.shape[1] == self.in_features else w[:, : self.in_features].contiguous()  # (out, in)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized weight, so FLOP counting and inspection see the effective values."""
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(), self.bias)  # (..., in) -> (..., out)

    def layer_stats(self) -> dict:
        w = self.dequantized_weight()
        n = w.numel() + (self.bias.numel() if self.bias is not None else 0)
        nz = int((w != 0).sum()) + (int((self.bias != 0).sum()) if self.bias is not None else 0)
        return {"params": n, "nonzero": nz, "dtype": f"int{self.bits}", "bits": self.bits, "simulated": False}

    def extra_repr(self) -> str:
        g = "per-channel" if self.n_groups == 1 else f"group_size={self.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, {g}, "
                f"symmetric={self.symmetric}")


class Int4Linear(_WeightOnlyLinear):
    """Weight-only int4 Linear: codes packed two per byte in a uint8 buffer (out, padded_in / 2)."""

    bits = 4

    def _empty_codes(self, rows: int, cols: int) -> torch.Tensor:
        return torch.zeros(rows, cols // 2, dtype=torch.uint8)

    def _store(self, q: torch.Tensor) -> torch.Tensor:
        return pack_int4(q)

    def codes(self) -> torch.Tensor:
        return unpack_int4(self.qweight)

    def float_codes(self) -> torch.Tensor:
        # one table lookup per byte gives both nibbles as floats: ~2x faster than unpack_int4(...).float()
        return F.embedding(self.qweight.int(), _NIBBLE_LUT).reshape(self.qweight.shape[0], -1)  # (out, padded in)


class Int8WeightLinear(_WeightOnlyLinear):
    """Weight-only int8 Linear (one code per byte), for layers kept at 8 bits in a mixed int4 model."""

    bits = 8

    def _empty_codes(self, rows: int, cols: int) -> torch.Tensor:
        return torch.zeros(rows, cols, dtype=torch.int8)

    def _store(self, q: torch.Tensor) -> torch.Tensor:
        return q

    def codes(self) -> torch.Tensor:
        return self.qweight


class Int4Config(StepConfig):
    """Weight-only int4 of the selected Linear/Conv1D layers; ``overrides`` maps layers (name or ``re:``) to 4 or 8
    bits."""

    kind: Literal["quantize_int4"] = "quantize_int4"
    ui = TechniqueUI(family="quantize", label="int4 packed weights (real)",
                     layer_types=("Linear", "Conv1D"), storage="int4", order=40)
    group_size: Literal[16, 32, 64, 128, 256] | None = 64  # None = one scale per output channel
    symmetric: bool = True
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = False  # the classifier is tiny and the most sensitive layer at 4 bits
    overrides: dict[str, Literal[4, 8]] = Field(default_factory=dict)
    # torch: codes packed two per byte here, dequantized on every call (small file, slow); onnxruntime: the same
    # layers as ONNX Runtime MatMulNBits (block = group_size, 32 per channel), an int4 kernel: small and fast
    engine: Literal["torch", "onnxruntime"] = "torch"


def int4_layer_bits(model: nn.Module, cfg: "Int4Config", ctx: StepContext) -> dict[str, int]:
    """{Linear/Conv1D layer: bits (4, or an override)} that ``cfg`` selects, with pruning masks folded in first
    (Conv1D layers become the equivalent nn.Linear); one line when nothing is selected. Shared by the torch packing
    and the ONNX Runtime MatMulNBits engine."""
    fold_masks(model)
    names = select_layers(model, cfg, ctx, (nn.Linear,), "quantize_int4")
    bits = {n: 4 for n in names}
    bits.update(resolve_overrides(model, cfg.overrides, (nn.Linear,), "quantize_int4"))
    if not bits:
        raise CompressionError("targets: quantize_int4 selected no Linear/Conv1D layer; name some in targets")
    as_linear(model, list(bits))  # a Conv1D is packed (and exported as MatMul) as the equivalent Linear
    return bits


@register(Int4Config)
def _int4(model: nn.Module, cfg: Int4Config, ctx: StepContext) -> nn.Module:
    if cfg.engine == "onnxruntime":
        if ctx.replay:
            return OrtModule(storage="int4", bits=4)
        return ort_int4_step(model, int4_layer_bits(model, cfg, ctx), ctx, cfg.group_size, cfg.symmetric)
    bits = int4_layer_bits(model, cfg, ctx)
    for i, (name, b) in enumerate(bits.items()):
        cls = Int4Linear if b == 4 else Int8WeightLinear
        set_submodule(model, name, cls.from_float(model.get_submodule(name), cfg.group_size, cfg.symmetric))
        ctx.report((i + 1) / len(bits), f"{name}: int{b}")
    return model.eval()
