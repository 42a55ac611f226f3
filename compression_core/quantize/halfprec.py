"""Half precision: cast the whole model to float16 or bfloat16 (Micikevicius et al. 2018, "Mixed Precision
Training"; Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training").

Real dtypes, half the file. On this CPU (AVX2, no AVX-512 FP16/BF16) the kernels are slower than fp32, which the
benchmark shows. ``measure.predict`` feeds inputs in the model's dtype and returns float logits.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..technique import StepConfig, StepContext, register, TechniqueUI

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class HalfPrecisionConfig(StepConfig):
    """All parameters and buffers in ``dtype`` (fp16 or bf16); inputs must be given in the same dtype."""

    kind: Literal["quantize_half"] = "quantize_half"
    ui = TechniqueUI(family="quantize", label="fp16 / bf16 (real, whole model)", storage="fp16", order=50)
    dtype: Literal["fp16", "bf16"] = "fp16"


@register(HalfPrecisionConfig)
def _half(model: nn.Module, cfg: HalfPrecisionConfig, ctx: StepContext) -> nn.Module:
    return model.to(_DTYPES[cfg.dtype]).eval()
