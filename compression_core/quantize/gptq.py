"""GPTQ: weight-only quantization that corrects each column's rounding error on the columns not yet quantized,
using the inverse Hessian of the layer's reconstruction error (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ:
Accurate Post-Training Quantization for Generative Pre-trained Transformers", arXiv:2210.17323).

For a Linear layer with calibration inputs X (rows, in), the error ||X W^T - X Q^T||^2 has Hessian H = 2 X^T X
over the input columns. GPTQ quantizes W column by column (in the input order, or by decreasing diag(H) with
``act_order``); after rounding column j it spreads the error ``(w_j - q_j) / Hinv_jj`` over the later columns along
row j of the upper Cholesky factor of H^-1 (the Optimal Brain Surgeon update), in lazy blocks of ``block`` columns
(one matrix product per block for the columns beyond it). Group scales are chosen when a group's first column is
reached, from the weights as updated so far (with ``act_order``: from the original weights, "static groups", so
that groups stay contiguous in the stored layout). With a diagonal H no error moves, and GPTQ is round-to-nearest.

Hand-written here because no maintained implementation runs on this CPU (README "LLM quantization"): torchao
0.18's GPTQ asserts CUDA (int8) or needs mslk (int4); llm-compressor pins transformers <= 5.17; GPTQModel needs
torch >= 2.14.1.
"""

from __future__ import annotations

import torch

from ..errors import CompressionError
from .groupwise import QuantizedWeight, group_params, quantize_column
from .int4 import _group


class Hessian:
    """Running ``2 X^T X / rows`` of a layer's inputs (float64), fed batch by batch."""

    def __init__(self, in_features: int) -> None:
        self.h = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        """Add rows ``x`` (rows, in)."""
        x = x.detach().reshape(-1, self.h.shape[0]).double()  # (rows, in)
        n = x.shape[0]
        if n == 0:
            return
        total = self.rows + n
        self.h.mul_(self.rows / total).add_(x.T @ x, alpha=2.0 / total)  # (in, in)
        self.rows = total


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, float32; more damping where H is singular."""
    h = h.clone().double()
    dead = torch.diagonal(h) == 0  # inputs that were always zero: no information, keep the weight as rounded
    h[dead, dead] = 1.0
    mean = float(torch.diagonal(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for factor in (1, 10, 100, 1000):
        try:
            low = torch.linalg.cholesky(h + eye * (damp * factor * mean))
            inv = torch.cholesky_inverse(low)
            return torch.linalg.cholesky(inv, upper=True).float()
        except torch.linalg.LinAlgError:
            continue
    raise CompressionError("damp: GPTQ's Hessian stayed singular even damped 1000x; give more calibration data "
                           "or a larger damp")


@torch.no_grad()
def gptq(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = True,
         damp: float = 0.01, block: int = 128, act_order: bool = False) -> QuantizedWeight:
    """GPTQ of ``w`` (out, in) with input Hessian ``h`` (in, in), group-wise: the same storage as round-to-nearest
    (``groupwise.rtn``), codes chosen to minimise the layer's output error on the calibration inputs."""
    W = w.detach().float().clone()  # (out, in)
    out, n = W.shape
    if h.shape != (n, n):
        raise CompressionError(f"gptq: Hessian is {tuple(h.shape)}, expected ({n}, {n}) for a weight of {(out, n)}")
    g, groups = _group(n, group_size)
    scale = torch.zeros(out, groups, dtype=torch.float16)
    zp = torch.zeros(out, groups, dtype=torch.int8)
    perm = torch.arange(n)
    if act_order:  # static groups: parameters from the original weights, columns visited by decreasing diag(H)
        for k in range(groups):
            scale[:, k], zp[:, k] = group_params(W[:, k * g:(k + 1) * g], bits, symmetric)
        perm = torch.argsort(torch.diagonal(h), descending=True, stable=True)
        W, h = W[:, perm], h[perm][:, perm]
    hinv = _inverse_cholesky(h, damp)  # (in, in) upper
    Q = torch.zeros(out, n)  # codes, in visiting order
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        W1 = W[:, i1:i2].clone()  # (out, b) updated in place
        err1 = torch.zeros_like(W1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            k = int(perm[col]) // g  # the column's group
            if not act_order and col % g == 0:  # a group starts: its parameters from the weights as updated so far
                ahead = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :g]  # (out, <= g)
                scale[:, k], zp[:, k] = group_params(ahead, bits, symmetric)
            s, z = scale[:, k], zp[:, k]
            wcol = W1[:, i]  # (out,)
            q = quantize_column(wcol, s, z, bits)  # (out,)
            Q[:, col] = q
            deq = (q - z.float()) * s.float()
            e = (wcol - deq) / hinv1[i, i]  # (out,)
            W1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)  # (out, b - i)
            err1[:, i] = e
        W[:, i2:] -= err1 @ hinv[i1:i2, i2:]  # lazy batch update of the columns beyond the block
    codes = zp[:, -1:].float().expand(out, g * groups).clone()  # padding: the code of 0, as round-to-nearest
    codes[:, perm] = Q  # back to the input order
    return QuantizedWeight(codes.to(torch.int8), scale, None if symmetric else zp, g, n, bits)


def layer_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Relative output error ``||X W^T - X W_hat^T|| / ||X W^T||`` of a layer on inputs ``x`` (rows, in)."""
    x = x.reshape(-1, w.shape[1]).float()
    ref = x @ w.float().T  # (rows, out)
    return float(torch.linalg.norm(ref - x @ w_hat.float().T) / torch.linalg.norm(ref).clamp(min=1e-30))


__all__ = ["Hessian", "gptq", "layer_error"]
