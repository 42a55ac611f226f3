"""Static post-training int8 and quantization-aware training (Jacob et al. 2018; Krishnamoorthi 2018,
"Quantizing deep convolutional networks for efficient inference: A whitepaper").

Static PTQ observes activation ranges on the calibration split, fuses conv-BN-ReLU and linear-ReLU, and swaps
layers for int8 kernels, so whole regions run in integer arithmetic. For ``nn.Sequential`` models one
QuantStub/DeQuantStub pair wraps each run of quantized layers (ReLU, pooling and Flatten pass int8 through);
other models (the ViT, the LSTM) get a stub pair around each quantized Linear, since LayerNorm, GELU and attention
stay float. ``weight_bits`` below 8 restricts the int8 codes to a smaller grid (still stored as int8): what the
PTQ-vs-QAT comparison at 4 bits uses.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import CompressionError
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ..train import FineTuneConfig, fine_tune
from . import _torch_ao
from ..prune.common import fold_masks
from ._common import require_split, rezero, select_layers, set_submodule, zero_masks

STATIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
# layers that run on int8 tensors unchanged, so they do not end a quantized region
_PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)


class _EagerInt8(StepConfig):
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = True  # one int8 region end to end; costs < 0.5 pt here (benchmarks.quantization)
    weights: Literal["per_channel", "per_tensor"] = "per_channel"
    weight_bits: int = Field(default=8, ge=2, le=8)
    fuse: bool = True


class StaticInt8Config(_EagerInt8):
    """Static int8 PTQ calibrated on the calibration split (min-max or histogram activation observer)."""

    kind: Literal["quantize_static"] = "quantize_static"
    ui = TechniqueUI(family="quantize", label="int8 static (real, calibrated)",
                     layer_types=("Linear", "Conv2d"), storage="int8", order=30)
    observer: Literal["minmax", "histogram"] = "histogram"
    calib_batches: int = Field(default=8, ge=1, le=1000)


def _fusion_groups(model: nn.Sequential, names: list[str]) -> list[list[str]]:
    """conv-BN-ReLU, conv-BN, conv-ReLU and linear-ReLU runs among a Sequential's children (first one targeted)."""
    items = list(model.named_children())
    groups = []
    i = 0
    while i < len(items):
        name, m = items[i]
        nxt = [c for _, c in items[i + 1 : i + 3]]
        if name in names and isinstance(m, nn.Conv2d):
            if len(nxt) >= 2 and isinstance(nxt[0], nn.BatchNorm2d) and isinstance(nxt[1], nn.ReLU):
                groups.append([name, items[i + 1][0], items[i + 2][0]])
            elif nxt and isinstance(nxt[0], (nn.BatchNorm2d, nn.ReLU)):
                groups.append([name, items[i + 1][0]])
        elif name in names and isinstance(m, nn.Linear) and nxt and isinstance(nxt[0], nn.ReLU):
            groups.append([name, items[i + 1][0]])
        i += len(groups[-1]) if groups and groups[-1][0] == name else 1
    return groups


def _stub_regions(model: nn.Sequential, names: list[str], qconfig) -> None:
    """Insert a QuantStub before each run of quantized children and a DeQuantStub after it (in place)."""
    new: OrderedDict[str, nn.Module] = OrderedDict()
    inside, k = False, 0
    for name, child in model.named_children():
        if name in names:
            if not inside:
                new[f"quant{k}"] = _torch_ao.QuantStub(qconfig)
                inside = True
            child.qconfig = qconfig
        elif inside and not isinstance(child, _PASS_THROUGH):
            new[f"dequant{k}"] = _torch_ao.DeQuantStub(qconfig)
            inside, k = False, k + 1
        new[name] = child
    if inside:
        new[f"dequant{k}"] = _torch_ao.DeQuantStub(qconfig)
    model._modules = new


def _is_plain_sequential(model: nn.Module) -> bool:
    return isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward


def build_int8(model: nn.Module, cfg: _EagerInt8, ctx: StepContext, qat: bool) -> nn.Module:
    """Fuse, insert stubs and observers (or fake-quant modules), calibrate or train, convert to int8 modules."""
    technique = cfg.kind
    fold_masks(model)  # a pruned model: quantize its effective (zeroed) weights; the masks are not quantizable
    names = select_layers(model, cfg, ctx, STATIC_TYPES, technique)
    if not names:
        raise CompressionError(f"targets: {technique} selected no Linear/Conv2d layer; name some in targets")
    split = "train" if qat else "calib"
    if not ctx.replay:
        data = require_split(ctx, split, "data", technique)
    qconfig = _torch_ao.qconfig(getattr(cfg, "observer", "minmax"), cfg.weights, cfg.weight_bits, qat=qat)
    model.train(qat)
    if _is_plain_sequential(model):
        if cfg.fuse:
            _torch_ao.fuse(model, _fusion_groups(model, names), qat=qat)
        _stub_regions(model, names, qconfig)
    else:  # stubs around each quantized layer: the float ops between them stay float
        for name in names:
            wrapper = _torch_ao.QuantWrapper(model.get_submodule(name))
            wrapper.qconfig = qconfig
            set_submodule(model, name, wrapper)
    _torch_ao.prepare(model, qat=qat)
    if not ctx.replay:
        if qat:
            ft = FineTuneConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=ctx.seed)
            zeros = zero_masks(model)  # pruned weights stay pruned through QAT training
            model = _torch_ao.run_quiet(fine_tune, model, data.x, data.y, ft, ctx.report,
                                        after_step=lambda m: rezero(m, zeros))
        else:
            bs = max(1, -(-len(data.y) // cfg.calib_batches))
            with torch.no_grad():
                for i in range(0, len(data.y), bs):
                    _torch_ao.run_quiet(model, data.x[i : i + bs])
                    ctx.report(min(1.0, (i + bs) / len(data.y)), "calibrating")
    return _torch_ao.convert(model)


@register(StaticInt8Config)
def _static(model: nn.Module, cfg: StaticInt8Config, ctx: StepContext) -> nn.Module:
    return build_int8(model, cfg, ctx, qat=False)
