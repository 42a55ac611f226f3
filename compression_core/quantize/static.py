"""Static post-training int8 and quantization-aware training (Jacob et al. 2018; Krishnamoorthi 2018,
"Quantizing deep convolutional networks for efficient inference: A whitepaper").

Static PTQ observes activation ranges on the calibration split and runs whole regions of the model in integer
arithmetic. It works in graph mode (``torch.ao`` FX: ``graph_mode``): the model is traced, conv-BN-ReLU and
linear-ReLU are fused wherever they occur (inside residual blocks, depthwise stacks, any nesting), residual adds,
concatenations, pooling and means stay int8, and float ops (LayerNorm, GELU, attention) get a quantize/dequantize
pair only where the graph changes. A Conv2d subclass with its own ``forward`` (a "same" padding) is traced through,
so its forward is kept and its convolution still runs in int8. Where a model cannot be traced, each selected
standard Linear/Conv layer gets its own quant/dequant pair (eager mode, no fusion); a selected layer with its own
``forward`` is then refused in one line. ``weight_bits`` below 8 restricts the int8 codes to a smaller grid (still
stored as int8): what the PTQ-vs-QAT comparison at 4 bits uses.

``engine="onnxruntime"`` realises the same step in ONNX Runtime instead (the float model exported, then ORT's
static QDQ int8 of the same layers calibrated on the same split; QAT: trained here, exported as QDQ with its
learned ranges): the result is an ``OrtModule`` whose file is the .onnx bytes.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from .. import inputs as I
from ..errors import CompressionError
from ..io import fold_masks
from ..technique import StepConfig, StepContext, clone_model, register, TechniqueUI
from ..train import FineTuneConfig, fine_tune
from .ao_eager import QuantWrapper, convert, prepare
from .ao_engine import qconfig, run_quiet
from .graph_mode import GraphModeError, convert_graph, prepare_graph
from .qdq_export import export_qdq
from ..measure import size_bytes
from ..ort_engine import OrtModule, example_batch, ort_int8_step
from ._common import (_READS_CHILD_WEIGHTS, as_linear, refuse_if_not_smaller, require_split, rezero,
                      select_layers, set_submodule, zero_masks)

STATIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
_STOCK_FORWARD = {nn.Linear: nn.Linear.forward, nn.Conv1d: nn.Conv1d.forward, nn.Conv2d: nn.Conv2d.forward}

Engine = Literal["torch", "onnxruntime"]


class _Int8Config(StepConfig):
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = True  # one int8 region end to end; costs < 0.5 pt here (benchmarks.quantization)
    weights: Literal["per_channel", "per_tensor"] = "per_channel"
    weight_bits: int = Field(default=8, ge=2, le=8)
    fuse: bool = True  # fold BN into convs and fuse ReLU (graph mode); False keeps them as separate int8 ops
    engine: Engine = "torch"  # torch's int8 kernels, or ONNX Runtime (the result runs in an ORT session)


_EagerInt8 = _Int8Config  # the former name


class StaticInt8Config(_Int8Config):
    """Static int8 PTQ calibrated on the calibration split (min-max or histogram activation observer)."""

    kind: Literal["quantize_static"] = "quantize_static"
    ui = TechniqueUI(family="quantize", label="int8 static (real, calibrated)",
                     layer_types=("Linear", "Conv1D", "Conv2d"), storage="int8", order=30)
    observer: Literal["minmax", "histogram"] = "histogram"
    calib_batches: int = Field(default=8, ge=1, le=1000)


def _has_own_forward(module: nn.Module) -> bool:
    for base, fwd in _STOCK_FORWARD.items():
        if isinstance(module, base):
            return type(module).forward is not fwd
    return False


def _examples(ctx: StepContext) -> tuple[tuple[tuple, dict], list[tuple[tuple, dict]]]:
    """(a batch of 2 to trace on, batches of 3 and 1 to verify the traced graph on), from the workload."""
    wl = ctx.data
    split = None
    for name in ("calib", "test", "train"):
        s = getattr(wl, name, None) if wl is not None else None
        if s is not None and len(s) > 0:
            split = s
            break
    if split is None:
        raise CompressionError("data: static int8 needs the workload's inputs to trace the model; pass the workload, "
                               "e.g. quantize(model, cfg, workload)")
    x = split.x
    trace = I.example_args(I.head(x, 2))
    checks = [I.example_args(I.head(x, 3)), I.example_args(I.take(I.head(x, 3), slice(2, 3)))]
    return trace, checks


def _calibrate(model: nn.Module, x, batches: int, ctx: StepContext) -> None:
    n = I.n_items(x)
    bs = max(1, -(-n // batches))
    with torch.no_grad():
        for i in range(0, n, bs):
            run_quiet(I.call, model, I.take(x, slice(i, i + bs)))
            ctx.report(min(1.0, (i + bs) / n), "calibrating")


def _train(model: nn.Module, cfg, ctx: StepContext, data) -> nn.Module:
    ft = FineTuneConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=ctx.seed)
    zeros = zero_masks(model)  # pruned weights stay pruned through QAT training
    return run_quiet(fine_tune, model, data.x, data.y, ft, ctx.report, after_step=lambda m: rezero(m, zeros))


def _eager(model: nn.Module, names: list[str], qc, cfg, ctx: StepContext, qat: bool, why: str, data) -> nn.Module:
    """Fallback for models that cannot be traced: a quant/dequant pair around each selected standard layer."""
    modules = dict(model.named_modules())
    names = [n for n in names if not isinstance(modules.get(n.rpartition(".")[0]), _READS_CHILD_WEIGHTS)]
    if not names:
        raise CompressionError(f"targets: {cfg.kind} found no layer it can wrap in this untraceable model ({why})")
    own = [n for n in names if _has_own_forward(modules[n])]
    if own:
        raise CompressionError(
            f"targets: layer {own[0]!r} is a {type(modules[own[0]]).__name__} with its own forward, which "
            f"{cfg.kind} keeps only in graph mode, and the model cannot be traced ({why}); leave it out with "
            f"ignore=['{own[0]}'] or use engine='onnxruntime'")
    model.train(qat)
    for name in names:
        wrapper = QuantWrapper(model.get_submodule(name))
        wrapper.qconfig = qc
        set_submodule(model, name, wrapper)
    prepare(model, qat=qat)
    if not ctx.replay:
        if qat:
            model = _train(model, cfg, ctx, data)
        else:
            _calibrate(model, data.x, cfg.calib_batches, ctx)
    return convert(model)


def build_int8(model: nn.Module, cfg: _Int8Config, ctx: StepContext, qat: bool, check_size: bool = True) -> nn.Module:
    """Trace, fuse and insert observers (or fake-quant modules), calibrate or train, convert to int8 kernels;
    the eager per-layer fallback where the model cannot be traced. ``check_size``: refuse in one line when the
    int8 file would not be smaller than the float one."""
    technique = cfg.kind
    fold_masks(model)  # a pruned model: quantize its effective (zeroed) weights; the masks are not quantizable
    before = None if ctx.replay or not check_size else size_bytes(model)
    names = select_layers(model, cfg, ctx, STATIC_TYPES, technique)
    if not names:
        raise CompressionError(f"targets: {technique} selected no Linear/Conv1D/Conv layer; name some in targets")
    as_linear(model, names)  # torch.ao's int8 modules replace nn.Linear: a Conv1D becomes the equivalent Linear
    split = "train" if qat else "calib"
    data = None if ctx.replay else require_split(ctx, split, "data", technique)
    qc = qconfig(getattr(cfg, "observer", "minmax"), cfg.weights, cfg.weight_bits, qat=qat)
    example, checks = _examples(ctx)
    try:
        prepared = prepare_graph(clone_model(model), example, [] if ctx.replay else checks, names, qc, qat,
                                 fuse=cfg.fuse)
    except GraphModeError as e:
        ctx.report(0.0, f"graph mode unavailable ({e}); eager mode, one quant/dequant pair per layer")
        out = _eager(model, names, qc, cfg, ctx, qat, str(e), data)
        quantized = names
    else:
        left = prepared.meta.get("left_float") or []
        if left:
            ctx.report(0.0, f"left float: {', '.join(left)} (inside torch.nn blocks that run as one float op)")
        if not ctx.replay:
            if qat:
                prepared = _train(prepared, cfg, ctx, data)
            else:
                _calibrate(prepared.eval(), data.x, cfg.calib_batches, ctx)
        out = convert_graph(prepared)
        quantized = [n for n in names if n not in left]
    if before is not None:
        refuse_if_not_smaller(before, out, quantized, technique,
                              "quantize_dynamic runs LSTM/GRU/Linear in int8, quantize_embedding the embedding "
                              "tables, and engine='onnxruntime' whole attention blocks")
    return out


def _onnxruntime(model: nn.Module, cfg: _Int8Config, ctx: StepContext, qat: bool) -> nn.Module:
    """The step in ONNX Runtime: the same layers and calibration split as the torch engine; QAT trains here (graph
    mode) and deploys its learned ranges as QDQ (the ORT file is what ships, so its size is not checked here)."""
    if ctx.replay:
        return OrtModule()
    if qat:
        trained = build_int8(model, cfg, ctx, qat=True, check_size=False)
        proto = export_qdq(trained, example_batch(ctx.data))
        return OrtModule(proto.SerializeToString(), storage="int8", bits=8, source=model)
    if cfg.weight_bits != 8:
        raise CompressionError(f"weight_bits: ONNX Runtime's int8 stores 8-bit weights; use engine='torch' for "
                               f"weight_bits={cfg.weight_bits}")
    fold_masks(model)
    names = select_layers(model, cfg, ctx, STATIC_TYPES, cfg.kind)
    if not names:
        raise CompressionError(f"targets: {cfg.kind} selected no layer; name some in targets")
    as_linear(model, names)  # exported as MatMul like any Linear
    calib = require_split(ctx, "calib", "data", cfg.kind)
    return ort_int8_step(model, names, ctx, cfg.kind, "static", calib_x=calib.x,
                         per_channel=cfg.weights == "per_channel")


def realise(model: nn.Module, cfg: _Int8Config, ctx: StepContext, qat: bool) -> nn.Module:
    """The step in the engine ``cfg.engine`` names: torch's int8 kernels, or an ONNX Runtime session."""
    if cfg.engine == "onnxruntime":
        return _onnxruntime(model, cfg, ctx, qat)
    return build_int8(model, cfg, ctx, qat)


@register(StaticInt8Config)
def _static(model: nn.Module, cfg: StaticInt8Config, ctx: StepContext) -> nn.Module:
    return realise(model, cfg, ctx, qat=False)
