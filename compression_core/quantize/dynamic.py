"""Dynamic int8: int8 weights, activations quantized per batch at run time (Jacob et al. 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"; torch's quantize_dynamic).

No calibration data is needed, so it is the cheapest way to shrink Linear- and LSTM-heavy models about 4x.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..cpu import cpu_has_int8_dot
from ..errors import CompressionError
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ..io import fold_masks
from .ao_eager import quantize_dynamic
from ..measure import size_bytes
from ..ort_engine import OrtModule, ort_int8_step
from ._common import as_linear, refuse_if_not_smaller, select_layers

DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)


class DynamicInt8Config(StepConfig):
    """Dynamic int8 of the Linear/Conv1D/LSTM/GRU layers selected by ``targets`` (None = all) minus ``ignore``."""

    kind: Literal["quantize_dynamic"] = "quantize_dynamic"
    ui = TechniqueUI(family="quantize", label="int8 dynamic (real)",
                     layer_types=("Linear", "Conv1D", "LSTM", "GRU"), storage="int8", order=20)
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = True  # 8-bit costs the classifier little accuracy (see benchmarks.quantization)
    engine: Literal["torch", "onnxruntime"] = "torch"  # onnxruntime: ORT's dynamic int8 of the same layers
    # torch engine (ONNX Runtime's always uses per-channel weights, and 8-bit activations where the CPU has VNNI):
    weights: Literal["per_tensor", "per_channel"] = "per_tensor"  # per_channel: one scale per output channel
    # reduced: 7-bit activations (torch's default, safe on any x86); full: 8-bit; auto: full where the CPU has int8
    # dot-product instructions (VNNI / AMX / dotprod: int32 sums, no int16 saturation), else reduced
    activations: Literal["reduced", "full", "auto"] = "reduced"


@register(DynamicInt8Config)
def _dynamic(model: nn.Module, cfg: DynamicInt8Config, ctx: StepContext) -> nn.Module:
    if cfg.engine == "onnxruntime":
        return _onnxruntime(model, cfg, ctx)
    fold_masks(model)  # a pruned model: quantize its effective (zeroed) weights; the masks are not quantizable
    names = select_layers(model, cfg, ctx, DYNAMIC_TYPES, "quantize_dynamic", swapped=True)
    if not names:
        raise CompressionError("targets: quantize_dynamic selected no Linear/Conv1D/LSTM/GRU layer; name some in "
                               "targets")
    as_linear(model, names)  # torch.ao swaps nn.Linear only: a Conv1D becomes the equivalent Linear first
    ctx.report(0.0, f"dynamic int8 on {len(names)} layers")
    before = None if ctx.replay else size_bytes(model)
    full = cfg.activations == "full" or (cfg.activations == "auto" and cpu_has_int8_dot())
    if cfg.activations == "full" and not cpu_has_int8_dot() and not ctx.replay:
        ctx.note("activations='full' on a CPU without int8 dot-product instructions: fbgemm's int16 sums can "
                 "saturate; 'auto' keeps 7-bit activations here")
    out = quantize_dynamic(model.eval(), names, per_channel=cfg.weights == "per_channel", full_range=full)
    if before is not None:
        refuse_if_not_smaller(before, out, names, "quantize_dynamic",
                              "quantize_static runs convolutions in int8, quantize_embedding the embedding tables")
    ctx.report(1.0, "done")
    return out


def _onnxruntime(model: nn.Module, cfg: DynamicInt8Config, ctx: StepContext) -> nn.Module:
    """ONNX Runtime's dynamic int8 of the layers the torch engine would quantize."""
    if ctx.replay:
        return OrtModule()
    fold_masks(model)
    names = select_layers(model, cfg, ctx, DYNAMIC_TYPES, cfg.kind)
    if not names:
        raise CompressionError(f"targets: {cfg.kind} selected no layer; name some in targets")
    as_linear(model, names)  # exported as MatMul, what ORT's dynamic int8 quantizes
    return ort_int8_step(model, names, ctx, cfg.kind, "dynamic")
