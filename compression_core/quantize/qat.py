"""Quantization-aware training (Jacob et al. 2018; Krishnamoorthi 2018): fake-quant modules with straight-through
gradients are trained for a few epochs on the train split, then converted to the same int8 graph static PTQ
produces. Graph mode (FX): conv-BN(-ReLU) is fused wherever it occurs and trained with BN folded into the fake-quant
weight (Krishnamoorthi 2018); a Conv2d subclass with its own ``forward`` is traced through, so its forward is kept
and its traced weight gets the fake-quant. In replay mode it builds that structure without training.
``engine="onnxruntime"``: trained here, exported as ONNX QDQ with the learned ranges, run in ONNX Runtime.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from ..technique import StepContext, register, TechniqueUI
from .static import _Int8Config, realise


class QATConfig(_Int8Config):
    """Quantization-aware training: fake-quant (straight-through) fine-tuning on the train split, then int8."""

    kind: Literal["quantize_qat"] = "quantize_qat"
    ui = TechniqueUI(family="quantize", label="int8 quantization-aware training", trains=True,
                     layer_types=("Linear", "Conv1D", "Conv2d"), storage="int8", order=35)
    epochs: int = Field(default=3, ge=0, le=200)
    lr: float = Field(default=5e-4, gt=0, le=1.0)
    batch_size: int = Field(default=64, ge=1, le=4096)


@register(QATConfig)
def _qat(model: nn.Module, cfg: QATConfig, ctx: StepContext) -> nn.Module:
    return realise(model, cfg, ctx, qat=True)
