"""The quantize family: ``quantize(model, cfg, data=None) -> new model``; the config's type picks the method.

- ``DynamicInt8Config``  (kind ``quantize_dynamic``): int8 weights, per-batch activations; Linear and LSTM.
- ``StaticInt8Config``   (``quantize_static``): calibrated int8 PTQ in graph mode (fused wherever conv-BN-ReLU
  occurs); needs the calibration split.
- ``QATConfig``          (``quantize_qat``): fake-quant training, then int8; needs the train split.
- ``HalfPrecisionConfig`` (``quantize_half``): fp16 / bf16 dtypes.
- ``Int4Config``         (``quantize_int4``): weight-only int4 packed two per byte (per-layer 8-bit overrides).
- ``FakeQuantConfig``    (``fake_quant``): simulated 2-16 bits per layer (weights wrapped, layers keep their
  class and forward), reported as simulated.

Static int8, QAT, dynamic int8 and int4 take ``engine="torch"`` (default) or ``engine="onnxruntime"``: the same
layers and calibration realised in ONNX Runtime, returned as an ``OrtModule`` (``compression_core.ort``) whose
state is the .onnx file. Any quantized model deploys to ONNX Runtime with ``compression_core.ort.deploy_onnx``.

The input model is never modified. ``save_quantized``/``load_quantized`` store the state plus the config that
rebuilds the structure (pickling quantized modules is fragile; a state_dict over a replayed structure is not).
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from ..errors import CompressionError
from ..io import atomic_write_bytes, state_dict_bytes
from ..workload import as_workload
from ..technique import StepConfig, StepContext, apply_step
from . import _torch_ao
from ._torch_ao import load_safe_state_dict, safe_state_dict
from .dynamic import DynamicInt8Config
from .embedding import EmbeddingInt8Config
from .fakequant import FakeQuantConfig, FakeQuantWeight, wrap_fake_quant
from .halfprec import HalfPrecisionConfig
from .int4 import Int4Config, Int4Linear, Int8WeightLinear, pack_int4, unpack_int4
from .qat import QATConfig
from .static import StaticInt8Config

QUANT_CONFIGS: tuple[type[StepConfig], ...] = (
    DynamicInt8Config, StaticInt8Config, QATConfig, HalfPrecisionConfig, Int4Config, FakeQuantConfig,
)
_BY_KIND = {c.model_fields["kind"].default: c for c in QUANT_CONFIGS}
FORMAT = "compression-lab/quantized"


def quant_config(spec: StepConfig | dict[str, Any]) -> StepConfig:
    """A quantize config from a config object or a dict with ``kind``; bad fields give a one-line error."""
    if isinstance(spec, QUANT_CONFIGS):
        return spec
    if isinstance(spec, StepConfig):
        raise CompressionError(f"kind: {spec.kind!r} is not a quantization method; choose one of {', '.join(_BY_KIND)}")
    if not isinstance(spec, dict) or spec.get("kind") not in _BY_KIND:
        got = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
        raise CompressionError(f"kind: unknown quantization method {got!r}; choose one of {', '.join(_BY_KIND)}")
    try:
        return _BY_KIND[spec["kind"]](**{k: v for k, v in spec.items()})
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
    QAT (train) and fake-quant activations (calib), and names the classifier (default: the last Linear layer)."""
    cfg = quant_config(cfg)
    return apply_step(model, cfg, StepContext(data=as_workload(workload, model), seed=seed, progress=progress,
                                              replay=replay))


def save_quantized(model: nn.Module, cfg: StepConfig, path: str | os.PathLike, base: str) -> None:
    """Write ``{format, base workload reference, config, state}`` so ``load_quantized`` can rebuild the model.

    The state is ``safe_state_dict(model)``: tensors and tuples only (dynamic LSTM packed params unpacked), so the
    file loads with ``torch.load(weights_only=True)``.
    """
    bundle = {"format": FORMAT, "version": 1, "base": base, "config": cfg.model_dump(mode="json"),
              "state": safe_state_dict(model)}
    atomic_write_bytes(path, state_dict_bytes(bundle))


def rebuild(base_model: nn.Module, cfg: StepConfig, state: dict, workload: Any = None) -> nn.Module:
    """Replay ``cfg`` on a fresh float model (structure only, no data, no training), then load ``state`` over it."""
    model = quantize(base_model, cfg, workload, replay=True)
    return load_safe_state_dict(model, state)


def load_quantized(path: str | os.PathLike, base_model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by ``save_quantized`` (outputs identical to the saved model).

    ``base_model`` is the float model it was quantized from; by default the workload the file names.
    """
    with open(path, "rb") as f:
        bundle = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise CompressionError(f"path: {os.fspath(path)!r} is not a quantized model saved by save_quantized")
    cfg = quant_config(bundle["config"])
    wl = None
    if base_model is None:
        from ..workload import resolve_workload

        wl = resolve_workload(bundle["base"])
        base_model = wl.model
    return rebuild(base_model, cfg, bundle["state"], wl)


def engine() -> str:
    """The quantized engine this platform uses (x86 on x86-64, qnnpack on ARM)."""
    return _torch_ao.pick_engine()


__all__ = [
    "DynamicInt8Config", "EmbeddingInt8Config", "FakeQuantConfig", "FakeQuantWeight", "HalfPrecisionConfig",
    "Int4Config", "Int4Linear", "Int8WeightLinear", "QATConfig", "QUANT_CONFIGS", "StaticInt8Config", "engine",
    "load_quantized", "load_safe_state_dict", "pack_int4", "quant_config", "quantize", "rebuild", "safe_state_dict",
    "save_quantized", "unpack_int4", "wrap_fake_quant",
]
