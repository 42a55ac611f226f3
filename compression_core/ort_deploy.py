"""Deploy any compressed model in ONNX Runtime as what it is: static int8 / QAT as QDQ with torch's own ranges,
dynamic int8 as ORT dynamic int8, packed int4 as ORT ``MatMulNBits``, an ``OrtModule`` as its own file, anything
else as the float export; ``fastest_engine`` times a model in torch and deployed in ONNX Runtime now and names the
faster."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from . import inputs as I
from .bundle import load_bundle
from .errors import CompressionError
from .measure import latency, predict
from .onnx_io import PROTOBUF_LIMIT, export_float, strip_metadata
from .quantize._common import set_submodule
from .quantize.ao_eager import QuantWrapper, dequantized_float, is_dynamic_module
from .quantize.graph_mode import PackedWeight, is_graph_quantized
from .quantize.int4 import _WeightOnlyLinear
from .quantize.qdq_export import QDQExportError, export_qdq, qdq_module
from .technique import clone_model
from .ort_engine import OrtModule, example_batch
from .ort_nbits import float_linear, replace_with_nbits
from .ort_nodes import gemm_to_matmul, selected_nodes
from .ort_quantize import ort_quantize
from .ort_session import OnnxLike, as_proto, ort_latency, ort_predict, session


def _quantized_modules(model: nn.Module) -> list[tuple[str, str]]:
    """(name, type) of torch.ao quantized modules, which torch.export cannot trace (packed params, qtensors)."""
    found = []
    for name, m in model.named_modules():
        mod = type(m).__module__
        if mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized",
                           "torch.ao.nn.quantizable")) and not isinstance(m, nn.Sequential):
            found.append((name or "(model)", type(m).__name__))
            continue
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if any(t.is_quantized for t in own):
            found.append((name or "(model)", type(m).__name__))
    return found


def needs_deploy(model: nn.Module) -> bool:
    """True if ``model`` is not a plain float graph: int8 modules of torch.ao, packed int4/int8 weight-only layers,
    or a model that already runs in ONNX Runtime. Those export through ``deploy_proto``."""
    if getattr(model, "is_onnx_runtime_model", False) or is_graph_quantized(model):
        return True
    return any(getattr(m, "is_onnx_runtime_model", False) or isinstance(m, PackedWeight)
               or callable(getattr(m, "dequantized_weight", None)) for m in model.modules()) \
        or bool(_quantized_modules(model))


def check_exportable(model: nn.Module) -> None:
    """Raise a one-line CompressionError if ``model`` holds torch.ao int8 modules that no exporter here handles.

    Static int8 / QAT (graph mode, or eager per-layer wrappers), dynamic int8, int4 and ONNX Runtime models all
    export (``to_onnx`` hands them to ``deploy_proto``); this names what is left."""
    q = _quantized_modules(model)
    if not q:
        return
    dynamic = [n for n, m in model.named_modules() if is_dynamic_module(m)]
    if all(any(n == d or n.startswith(d + ".") for d in dynamic) for n, _ in q):
        return  # dynamic int8 (and its packed parameters): ONNX Runtime dynamic int8 of the same layers
    try:
        qdq_module(model)
    except QDQExportError as e:
        name, kind = q[0]
        raise CompressionError(
            f"export: torch.ao quantized module {name} ({kind}) is not exportable to ONNX: {e}; export the float "
            "model and quantize it in ONNX Runtime instead (engine='onnxruntime', or `compression-lab export --int8`)"
        ) from None


def deploy_proto(model: nn.Module, example, opset: int | None = None):
    """The ONNX ModelProto that deploys ``model`` in ONNX Runtime, whatever its compression:

    - an ``OrtModule`` (a step run with ``engine="onnxruntime"``): its own file;
    - static int8 / QAT of torch.ao (graph or eager mode): ONNX QDQ with torch's own ranges (int8 weights, int32
      biases, the calibrated or learned activation scales), which ONNX Runtime fuses into int8 kernels;
    - dynamic int8: the layers' int8 weights dequantized, exported, and ONNX Runtime dynamic int8 of the same layers;
    - packed int3 / int4 / int8 weight-only Linear layers (RTN, GPTQ, AWQ): ONNX Runtime ``MatMulNBits`` holding
      the layers' own codes and scales (``ort_nbits``), block = their group size;
    - anything else: the float export.
    """
    import onnx  # lazy: onnx takes about a second to import

    if isinstance(model, OrtModule):
        return onnx.ModelProto.FromString(model.onnx_bytes)
    if any(isinstance(m, OrtModule) for m in model.modules()):
        raise CompressionError("export: a model with an ONNX Runtime part inside a torch model cannot be exported "
                               "as one file; run every step in one engine")
    if is_graph_quantized(model) or _static_eager(model):
        return export_qdq(model, example, opset)
    dyn = [(n, m) for n, m in model.named_modules() if is_dynamic_module(m)]
    packed = [(n, m) for n, m in model.named_modules() if isinstance(m, _WeightOnlyLinear)]
    if not dyn and not packed:
        return export_float(model, example, opset)
    float_model = clone_model(model)
    for name, m in dyn + packed:
        set_submodule(float_model, name, dequantized_float(m) if (name, m) in dyn else float_linear(m))
    proto = export_float(float_model, example, opset, keep_metadata=True)
    gemm_to_matmul(proto)  # ORT's dynamic int8 and int4 quantize MatMul nodes
    blob: OnnxLike = proto
    if dyn:
        nodes = selected_nodes(proto, [n for n, _ in dyn], ("MatMul", "Gemm", "LSTM", "GRU"), "quantize_dynamic")
        blob = ort_quantize(proto, "dynamic", nodes=nodes)
    if packed:  # the layers' own codes and scales (int3 in 4-bit nibbles), not a second rounding by ORT
        blob = as_proto(blob)
        replace_with_nbits(blob, dict(packed))
    out = as_proto(blob)
    strip_metadata(out)
    return out


def _static_eager(model: nn.Module) -> bool:
    return any(isinstance(m, QuantWrapper) for m in model.modules())


def deploy_onnx(model_or_bundle, workload=None) -> bytes:
    """The .onnx bytes that deploy a compressed model in ONNX Runtime (``deploy_proto``), for the CLI's
    ``export --onnx``, the dashboard's download and ``fastest_engine``. ``model_or_bundle``: a model, or a bundle
    file written by ``apply --save-model`` (its workload is rebuilt from the reference it records).
    ``workload``: where the example inputs come from (needed for a model; a bundle brings its own)."""
    if isinstance(model_or_bundle, (str, os.PathLike)):
        recipe, model = load_bundle(model_or_bundle)
        workload = workload if workload is not None else recipe.workload()
    else:
        model = model_or_bundle
    if isinstance(model, OrtModule):
        return model.onnx_bytes
    check_exportable(model)
    proto = deploy_proto(model, example_batch(workload))
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise CompressionError("export: model is over 2 GiB; write it to a file with export_onnx(..., external_data=True)")
    return proto.SerializeToString()


def fastest_engine(model: nn.Module, workload, batch_sizes: tuple[int, ...] = (1, 32), min_run_time: float = 0.2,
                   rounds: int = 3, onnx: bytes | None = None) -> dict[str, Any]:
    """Time ``model`` in torch and deployed in ONNX Runtime (``deploy_onnx``), both in this run, 1 thread,
    alternating rounds (median of the per-round medians), and name the faster at the largest batch size.

    Returns {engine: "torch" | "onnxruntime", ms: {engine: {batch: ms}}, speedup (torch ms / ORT ms at that batch),
    onnx_bytes, agreement (argmax of the ORT outputs vs the torch model's on the test split), reason}. A model that
    already runs in ONNX Runtime (an ``OrtModule``) has one engine only."""
    blob = onnx if onnx is not None else deploy_onnx(model, workload)
    sess = session(blob)
    x = workload.test.x
    ort_only = isinstance(model, OrtModule)
    timers = {"onnxruntime": lambda b, mrt: ort_latency(sess, I.head(x, b), min_run_time=mrt)[0]}
    if not ort_only:
        timers["torch"] = lambda b, mrt: latency(model, I.head(x, b), min_run_time=mrt)[0]
    times: dict[str, dict[int, list[float]]] = {e: {b: [] for b in batch_sizes} for e in timers}
    for _ in range(max(1, rounds)):
        for b in batch_sizes:
            for engine, t in timers.items():
                times[engine][b].append(t(b, min_run_time / max(1, rounds)))
    ms = {e: {b: float(np.median(v)) for b, v in per.items()} for e, per in times.items()}
    big = max(batch_sizes)
    engine = min(ms, key=lambda e: ms[e][big])
    ref = predict(model, x).argmax(-1)
    agreement = float((ort_predict(sess, x).argmax(-1) == ref).float().mean())
    speed = {b: ms["torch"][b] / ms["onnxruntime"][b] for b in batch_sizes} if not ort_only else {}
    reason = ("it runs in ONNX Runtime only" if ort_only else
              f"{engine} is {max(speed[big], 1 / speed[big]):.2f}x faster at batch {big} "
              f"({ms['torch'][big]:.3f} ms torch vs {ms['onnxruntime'][big]:.3f} ms ONNX Runtime, 1 thread)")
    return {"engine": engine, "ms": ms, "speedup": speed, "onnx_bytes": len(blob), "agreement": agreement,
            "reason": reason, "threads": 1}


__all__ = ["check_exportable", "deploy_onnx", "deploy_proto", "fastest_engine", "needs_deploy"]
