"""The quantize family: ``quantize(model, cfg, data=None) -> new model``; the config's type picks the method.

- ``DynamicInt8Config``  (kind ``quantize_dynamic``): int8 weights, per-batch activations; Linear and LSTM.
- ``StaticInt8Config``   (``quantize_static``): calibrated int8 PTQ in graph mode (fused wherever conv-BN-ReLU
  occurs); needs the calibration split.
- ``QATConfig``          (``quantize_qat``): fake-quant training, then int8; needs the train split.
- ``HalfPrecisionConfig`` (``quantize_half``): fp16 / bf16 dtypes.
- ``Int4Config``         (``quantize_int4``): weight-only int4 packed two per byte (per-layer 8-bit overrides).
- ``FakeQuantConfig``    (``fake_quant``): simulated 2-16 bits per layer (weights wrapped, layers keep their
  class and forward), reported as simulated.
- ``EmbeddingInt8Config`` (``quantize_embedding``): int8 embedding tables with row-wise scales.
- ``WeightOnlyConfig``   (``quantize_weight_only``): weight-only int8/int4/int3 with group scales by round-to-nearest,
  GPTQ or AWQ (calibrated), packed like int4 (int3 eight codes per three bytes).
- ``SmoothQuantConfig``  (``smoothquant``): per-input scales that move activation outliers into the weights; a float
  step placed before ``quantize_dynamic`` / ``quantize_static``.

Static int8, QAT, dynamic int8 and int4 take ``engine="torch"`` (default) or ``engine="onnxruntime"``: the same
layers and calibration realised in ONNX Runtime, returned as an ``OrtModule`` (``compression_core.ort``) whose
state is the .onnx file. Any quantized model deploys to ONNX Runtime with ``compression_core.ort.deploy_onnx``.

Any registered config whose ``TechniqueUI.family`` is ``"quantize"`` is accepted (the registry is the one list, so a
plugin's quantization technique works here too). The input model is never modified. To save a quantized model,
write a bundle (``compression_core.bundle.save_bundle``: the recipe that rebuilds the structure plus the weights;
pickling quantized modules is fragile, a state_dict over a replayed structure is not).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from torch import nn

from ..errors import CompressionError
from ..workload import as_workload
from ..technique import StepConfig, StepContext, apply_step_one_line, configs_of_family, technique_ui
from .ao_engine import pick_engine
from .safe_state import load_safe_state_dict, safe_state_dict
from .dynamic import DynamicInt8Config
from .embedding import EmbeddingInt8Config
from .fakequant import FakeQuantConfig, FakeQuantWeight, wrap_fake_quant
from .halfprec import HalfPrecisionConfig
from .int4 import Int4Config, Int4Linear, Int8WeightLinear, pack_int4, unpack_int4
from .qat import QATConfig
from .static import StaticInt8Config
from .smoothquant import SmoothedLinear, SmoothQuantConfig
from .weight_only import Int3Linear, WeightOnlyConfig


def _quant_kinds() -> dict[str, type[StepConfig]]:
    """The registered quantization techniques by kind (asked of the registry each time: plugins count)."""
    return {c.model_fields["kind"].default: c for c in configs_of_family("quantize")}


def quant_config(spec: StepConfig | dict[str, Any]) -> StepConfig:
    """A quantize config from a config object or a dict with ``kind``; bad fields give a one-line error."""
    kinds = _quant_kinds()
    if isinstance(spec, StepConfig):
        if type(spec) in kinds.values():
            return spec
        family = technique_ui(type(spec)).family
        raise CompressionError(f"kind: {spec.kind!r} is a {family} technique, not a quantization method; "
                               f"choose one of {', '.join(kinds)}")
    if not isinstance(spec, dict) or spec.get("kind") not in kinds:
        got = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
        raise CompressionError(f"kind: unknown quantization method {got!r}; choose one of {', '.join(kinds)}")
    try:
        return kinds[spec["kind"]](**{k: v for k, v in spec.items()})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        raise CompressionError(f"{field}: {err['msg']}, got {err.get('input')!r}") from None


def quantize(
    model: nn.Module,
    cfg: StepConfig | dict[str, Any],
    workload: Any = None,
    *,
    seed: int = 0,
    progress=None,
    replay: bool = False,
) -> nn.Module:
    """Quantize a copy of ``model`` with the method ``cfg`` names; the ``workload`` is needed by static PTQ (calib),
    QAT (train) and fake-quant activations (calib), and names the classifier (default: the last Linear layer).
    Every failure is a one-line CompressionError, as ``prune``'s."""
    cfg = quant_config(cfg)
    return apply_step_one_line(model, cfg, StepContext(data=as_workload(workload, model), seed=seed,
                                                       progress=progress, replay=replay))


def rebuild(base_model: nn.Module, cfg: StepConfig, state: dict, workload: Any = None) -> nn.Module:
    """Replay ``cfg`` on a fresh float model (structure only, no data, no training), then load ``state`` (a
    ``safe_state_dict``) over it. Bundles do the same for a whole recipe."""
    model = quantize(base_model, cfg, workload, replay=True)
    return load_safe_state_dict(model, state)


def engine() -> str:
    """The quantized engine this platform uses (x86 on x86-64, qnnpack on ARM)."""
    return pick_engine()


__all__ = [
    "DynamicInt8Config", "EmbeddingInt8Config", "FakeQuantConfig", "FakeQuantWeight", "HalfPrecisionConfig",
    "Int4Config", "Int4Linear", "Int8WeightLinear", "QATConfig", "StaticInt8Config", "engine",
    "load_safe_state_dict", "pack_int4", "quant_config", "quantize", "rebuild", "safe_state_dict",
    "unpack_int4", "wrap_fake_quant", "Int3Linear", "WeightOnlyConfig",
    "SmoothQuantConfig", "SmoothedLinear",
]
