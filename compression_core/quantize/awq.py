"""AWQ: activation-aware weight quantization. Input channels that carry large activations matter most, so each
input column j of W is scaled up by s_j = mean|x_j|^alpha before round-to-nearest and the input is scaled down by
1/s_j, which leaves the float product unchanged but gives the salient columns a finer grid (Lin, Tang, Tang, Yang,
Dang, Gan, Han 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration",
arXiv:2306.00978).

``awq_scale`` grid-searches alpha in [0, 1] minimising the layer's output error on calibration inputs (alpha = 0
is plain round-to-nearest, so AWQ is never worse than it on those inputs). The paper folds 1/s into the previous
operator (a LayerNorm or Linear); here it is kept beside the layer (``input_scale``, float16, one per input),
which works for any Linear whatever precedes it, at the cost of one multiply per input element.

Hand-written here because no maintained implementation runs on this CPU: torchao 0.18's AWQ needs mslk for int4,
AutoAWQ is CUDA-only and llm-compressor pins transformers <= 5.17.
"""

from __future__ import annotations

import torch

from .groupwise import fake_quantize


@torch.no_grad()
def awq_scale(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = True,
              grid: int = 20, act: torch.Tensor | None = None) -> tuple[torch.Tensor, float, float]:
    """(per-input scale s float16 (in,), best alpha, its output error) for ``w`` (out, in) on inputs ``x``
    (rows, in): the quantized layer computes ``x @ (Q(w * s) / s)^T``. ``act``: mean |x| per input (default: from
    ``x``). The error is the mean squared difference of the outputs."""
    w = w.detach().float()
    x = x.reshape(-1, w.shape[1]).float()  # (rows, in)
    act = (x.abs().mean(0) if act is None else act.float()).clamp(min=1e-8)  # (in,)
    ref = x @ w.T  # (rows, out)
    best: tuple[float, float, torch.Tensor] | None = None
    for k in range(grid + 1):
        alpha = k / grid
        s = act.pow(alpha).clamp(min=1e-4)
        s = (s / (s.max() * s.min()).sqrt()).half().clamp(min=2.0**-14)  # centred on 1, stored as float16
        w_hat = fake_quantize(w * s.float(), bits, group_size, symmetric) / s.float()  # (out, in)
        err = float(((x @ w_hat.T - ref) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, alpha, s)
    err, alpha, s = best
    return s, alpha, err


__all__ = ["awq_scale"]
