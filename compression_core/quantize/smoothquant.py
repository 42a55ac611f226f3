"""SmoothQuant: move activation outliers into the weights before int8 activations (Xiao, Lin, Seznec, Wu, Demouth,
Han 2022, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models",
arXiv:2211.10438).

A few input channels of a transformer's Linear layers carry activations far larger than the rest, so one int8 scale
per tensor rounds the others to a handful of levels. Per input channel j, SmoothQuant divides the activation by
``s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha)`` and multiplies weight column j by s_j: the float product is
unchanged, activations get flatter and weights take the difference (weights are quantized per channel, which
absorbs it better). ``alpha`` = how much of the difficulty moves (0.5 in the paper for most models).

A step of its own, placed before ``quantize_dynamic`` or ``quantize_static`` in a recipe: it returns a float model
whose smoothed layers are ``SmoothedLinear`` (the Linear, its weight scaled, as child ``linear``, and the input
scale ``inv_scale``, one float32 per input), so the int8 step that follows quantizes ``<layer>.linear`` with the
flattened inputs. The paper folds ``1/s`` into the preceding LayerNorm; here it is one multiply per input
element, which works whatever precedes the layer (BERT's post-LayerNorm output also feeds the residual, so a fold
there would change the model).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import CompressionError
from ..io import fold_masks
from ..measure import size_bytes
from ..technique import StepConfig, StepContext, TechniqueUI, register
from ._common import require_split, select_layers, set_submodule
from .calibration import collect, plain_linear

S_MIN, S_MAX = 1e-5, 1e5


class SmoothedLinear(nn.Module):
    """``linear(x * inv_scale)``: a Linear whose weight columns were multiplied by ``1 / inv_scale``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("inv_scale", torch.ones(linear.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)  # (..., in) -> (..., out)


class SmoothQuantConfig(StepConfig):
    """SmoothQuant of the selected Linear/Conv1D layers: per-input scales that move activation outliers into the
    weights (the model stays float); put ``quantize_dynamic`` or ``quantize_static`` after it."""

    kind: Literal["smoothquant"] = "smoothquant"
    ui = TechniqueUI(family="quantize", label="SmoothQuant (before int8 activations)",
                     layer_types=("Linear", "Conv1D"), storage="dense", order=19)
    alpha: float = Field(default=0.5, ge=0, le=1)  # migration strength: 0 = none, 1 = all onto the weights
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = False
    calib_samples: int = Field(default=128, ge=1, le=4096)


class _AbsMax:
    def __init__(self, n_in: int) -> None:
        self.amax = torch.zeros(n_in)

    def add(self, rows: torch.Tensor) -> None:
        if rows.numel():
            self.amax = torch.maximum(self.amax, rows.detach().abs().amax(0).float())


def smooth_scale(act_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input scale ``max|x_j|^alpha / max|W_:,j|^(1-alpha)`` (1 where a channel is all zero)."""
    w_max = weight.detach().abs().amax(0).float()  # (in,)
    s = act_max.float().clamp(min=1e-12).pow(alpha) / w_max.clamp(min=1e-12).pow(1 - alpha)
    s = torch.where((act_max > 0) & (w_max > 0), s, torch.ones_like(s))
    return s.clamp(S_MIN, S_MAX)


def _spread(a: torch.Tensor) -> float:
    """Largest over median channel max: how outlier-dominated an input is."""
    return float(a.max() / a.median().clamp(min=1e-12))


@register(SmoothQuantConfig)
def _smoothquant(model: nn.Module, cfg: SmoothQuantConfig, ctx: StepContext) -> nn.Module:
    fold_masks(model)
    names = select_layers(model, cfg, ctx, (nn.Linear,), "smoothquant", swapped=True)
    if not names:
        raise CompressionError("targets: smoothquant selected no Linear/Conv1D layer (the classifier is left alone "
                               "unless include_classifier, and so is a layer whose parent reads its weight directly, as "
                               "nn.TransformerEncoderLayer does); name some in targets")
    for name in names:
        set_submodule(model, name, plain_linear(model.get_submodule(name)))
    model.eval()
    if ctx.replay:
        for name in names:
            set_submodule(model, name, SmoothedLinear(model.get_submodule(name)))
        return model
    before = size_bytes(model)
    calib = require_split(ctx, "calib", "alpha", "smoothquant")
    stats = collect(model, names, calib.x, min(cfg.calib_samples, len(calib)), lambda m: _AbsMax(m.in_features))
    spreads = []
    with torch.no_grad():
        for i, name in enumerate(names):
            lin = model.get_submodule(name)
            amax = stats[name].amax
            s = smooth_scale(amax, lin.weight, cfg.alpha)  # (in,)
            lin.weight.mul_(s)  # (out, in) * (in,)
            wrapped = SmoothedLinear(lin)
            wrapped.inv_scale.copy_(1.0 / s)
            set_submodule(model, name, wrapped)
            if bool((amax > 0).any()):
                spreads.append((_spread(amax), _spread(amax / s)))
            ctx.report((i + 1) / len(names), f"{name}: smoothed")
    grew = size_bytes(model) - before
    if spreads:
        ctx.note(f"smoothquant alpha {cfg.alpha}: {len(names)} layers; activation max/median over channels "
                 f"{sum(a for a, _ in spreads) / len(spreads):.1f} -> {sum(b for _, b in spreads) / len(spreads):.1f} "
                 f"(mean over layers); the model is still float: put quantize_dynamic or quantize_static after it; "
                 f"the file grew {grew:,} bytes (one float32 scale per input)")
    return model


__all__ = ["SmoothQuantConfig", "SmoothedLinear", "smooth_scale"]
