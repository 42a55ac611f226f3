"""Group-wise weight quantization as plain tensor functions, shared by round-to-nearest, GPTQ and AWQ: the same
grid ``Int4Linear.from_float`` uses (float16 scales, symmetric ``absmax / qmax`` or asymmetric min/max with an
integer zero point, round half to even), for 3, 4 and 8 bits, and 3-bit codes packed eight in three bytes.

A ``QuantizedWeight`` holds the codes (out, padded in), the scales and zero points (out, groups): what a packed
weight-only layer stores. ``rtn`` is round-to-nearest of a whole matrix; ``group_params`` and ``quantize_column``
are the pieces GPTQ needs to quantize one column at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._common import affine_params, qrange
from .int4 import _FP16_TINY, _group


@dataclass
class QuantizedWeight:
    """Integer codes and group parameters of one (out, in) weight: ``w ~= (codes - zero_point) * scale`` per group."""

    codes: torch.Tensor  # (out, padded in) int8, padded with zeros up to groups x group_size
    scale: torch.Tensor  # (out, groups) float16
    zero_point: torch.Tensor | None  # (out, groups) int8 (signed range), None when symmetric
    group_size: int
    in_features: int
    bits: int

    def dequantize(self) -> torch.Tensor:
        """The float32 (out, in) weight the codes stand for."""
        out = self.codes.shape[0]
        q = self.codes.float().reshape(out, -1, self.group_size)  # (out, G, g)
        if self.zero_point is not None:
            q = q - self.zero_point.float().unsqueeze(2)
        return (q * self.scale.float().unsqueeze(2)).reshape(out, -1)[:, : self.in_features]  # (out, in)


def group_params(w: torch.Tensor, bits: int, symmetric: bool,
                 clip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale float16, zero point int8) of each row of ``w`` (..., n): one group's parameters, exactly as
    ``Int4Linear.from_float`` computes them (zero padding changes neither). ``clip`` (...,): the range is shrunk
    to this fraction of the row's extremes (values beyond it saturate)."""
    c = 1.0 if clip is None else clip
    if symmetric:
        qmax = qrange(bits)[1]
        scale = (w.abs().amax(dim=-1) * c / qmax).clamp(min=_FP16_TINY).half()  # (...,)
        return scale, torch.zeros_like(scale, dtype=torch.int8)
    s, z = affine_params(w.amin(dim=-1) * c, w.amax(dim=-1) * c, bits, eps=_FP16_TINY)
    return s.half(), (z - 2 ** (bits - 1)).to(torch.int8)  # unsigned grid shifted into the signed range


def quantize_column(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``clamp(round(w / scale) + zp)`` in the signed ``bits``-bit range, as float (same shape as ``w``)."""
    qmin, qmax = qrange(bits)
    return torch.clamp(torch.round(w / scale.float()) + zero_point.float(), qmin, qmax)


def rtn(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = True,
        clip: torch.Tensor | None = None) -> QuantizedWeight:
    """Round-to-nearest of ``w`` (out, in), group-wise (``group_size`` inputs share a scale; None = per channel);
    ``clip`` (out, groups): each group's range as a fraction of its extremes (``clip_search``)."""
    w = w.detach().float()
    out, n = w.shape
    g, groups = _group(n, group_size)
    wp = F.pad(w, (0, g * groups - n)).reshape(out, groups, g)  # (out, G, g)
    scale, zp = group_params(wp, bits, symmetric, clip)  # (out, G)
    q = quantize_column(wp, scale.unsqueeze(2), zp.unsqueeze(2), bits)  # (out, G, g)
    return QuantizedWeight(q.reshape(out, g * groups).to(torch.int8), scale, None if symmetric else zp, g, n, bits)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = True,
                  clip: torch.Tensor | None = None) -> torch.Tensor:
    """``rtn(w).dequantize()``: the weight after round-to-nearest, same shape."""
    return rtn(w, bits, group_size, symmetric, clip).dequantize()


@torch.no_grad()
def clip_search(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = True,
                steps: int = 10, lowest: float = 0.5) -> torch.Tensor:
    """Per (output row, group), the clipping ratio in [``lowest``, 1] whose round-to-nearest minimises that group's
    share of the layer's output error ``d^T H_g d`` (``h``: the input Hessian 2 X^T X / n, (in, in); ``d``: the
    group's weight error): AWQ's weight clipping (Lin et al. 2023, section 3.3), judged by the layer's output
    rather than by the weights. Returns (out, groups); 1 where no ratio beats the full range."""
    w = w.detach().float()
    out, n = w.shape
    g, groups = _group(n, group_size)
    wp = F.pad(w, (0, g * groups - n)).reshape(out, groups, g)  # (out, G, g)
    hp = F.pad(h.float(), (0, g * groups - n, 0, g * groups - n))  # (in', in')
    blocks = torch.stack([hp[k * g:(k + 1) * g, k * g:(k + 1) * g] for k in range(groups)])  # (G, g, g)
    best = torch.full((out, groups), float("inf"))
    ratio = torch.ones(out, groups)
    for i in range(steps + 1):
        r = 1.0 - (1.0 - lowest) * i / steps
        c = torch.full((out, groups), r)
        scale, zp = group_params(wp, bits, symmetric, c)  # (out, G)
        q = quantize_column(wp, scale.unsqueeze(2), zp.unsqueeze(2), bits)  # (out, G, g)
        d = wp - (q - zp.float().unsqueeze(2)) * scale.float().unsqueeze(2)  # (out, G, g) weight error
        err = torch.einsum("ogi,gij,ogj->og", d, blocks, d)  # (out, G)
        better = err < best
        best = torch.where(better, err, best)
        ratio = torch.where(better, c, ratio)
    return ratio


# ------------------------------------------------------------------------------------------------- 3-bit codes
def pack_int3(q: torch.Tensor) -> torch.Tensor:
    """Pack signed 3-bit codes (integers in [-4, 3], last dim a multiple of 8) eight per three bytes:
    (..., n) -> uint8 (..., 3n/8). Code ``8i+k`` occupies bits 3k..3k+2 of the little-endian 24-bit word ``i``."""
    if q.shape[-1] % 8:
        raise ValueError(f"pack_int3: last dimension must be a multiple of 8, got {q.shape[-1]}")
    if q.numel() and (int(q.min()) < -4 or int(q.max()) > 3):
        raise ValueError("pack_int3: codes must lie in [-4, 3]")
    u = (q.to(torch.int32) & 0x7).reshape(*q.shape[:-1], -1, 8)  # (..., n/8, 8) three-bit two's complement
    word = (u << torch.arange(0, 24, 3, dtype=torch.int32)).sum(-1)  # (..., n/8) 24-bit words
    parts = torch.stack([word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF], dim=-1)  # (..., n/8, 3)
    return parts.reshape(*q.shape[:-1], -1).to(torch.uint8)  # (..., 3n/8)


def unpack_int3(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_int3``: uint8 (..., 3m) -> int8 codes in [-4, 3] (..., 8m)."""
    b = packed.to(torch.int32).reshape(*packed.shape[:-1], -1, 3)  # (..., m, 3)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)  # (..., m)
    u = (word.unsqueeze(-1) >> torch.arange(0, 24, 3, dtype=torch.int32)) & 0x7  # (..., m, 8)
    return ((u ^ 4) - 4).reshape(*packed.shape[:-1], -1).to(torch.int8)  # sign-extend, (..., 8m)


__all__ = ["QuantizedWeight", "clip_search", "fake_quantize", "group_params", "pack_int3", "quantize_column", "rtn",
           "unpack_int3"]
