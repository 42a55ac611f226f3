"""ONNX Runtime beside torch: sessions with 1 intra-op thread, ORT's own int8 quantization, and measurement.

Why: int8 in torch (``torch.ao`` dynamic/static, torchao) is often no faster than fp32 on a CPU without int8
dot-product instructions, while ONNX Runtime's int8 kernels are. Two ORT quantization methods of their own:

- ``OrtDynamicInt8``: weights int8 per output channel, activations quantized on the fly (``quantize_dynamic``).
- ``OrtStaticInt8``: QDQ int8 for weights and activations, scales calibrated on the calibration split
  (``quantize_static`` with a ``CalibrationDataReader``); Jacob et al. 2018, "Quantization and Training of Neural
  Networks for Efficient Integer-Arithmetic-Only Inference".

``reduce_range`` (7-bit weights) defaults to "auto": on x86 without VNNI the u8 x s8 multiply-add (``vpmaddubsw``)
sums pairs into int16 and can saturate; 7-bit weights avoid that (FACTS.md: 11% output error with ORT's
defaults vs 1.8% with per_channel + reduce_range on such a CPU). With VNNI (``vpdpbusd``) it is not needed.
See ``why_runtime_matters()`` for the explanation with numbers measured on this machine.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from pydantic import Field
from torch import nn

from .errors import CompressionError
from .measure import LayerStats, ModelStats, flops as torch_flops
from .onnx_export import onnx_size_bytes, to_onnx
from .technique import StepConfig

OnnxLike = Union[bytes, str, os.PathLike, Any]  # serialized bytes, a .onnx path, or an onnx.ModelProto

RUNTIMES = ("torch", "onnxruntime")


# --------------------------------------------------------------------------------------------------- CPU
@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_int8_dot() -> bool:
    """True if the CPU has int8 dot-product instructions (x86 VNNI / AMX, ARM dotprod): then int8 multiply-adds
    accumulate straight into int32 without the int16 saturation that makes ``reduce_range`` necessary."""
    flags = cpu_flags()
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}:
        return True
    return platform.system() == "Darwin" and platform.machine() == "arm64"  # Apple silicon has dotprod


def cpu_summary() -> str:
    """One line: the int8-relevant SIMD features of this CPU."""
    flags = cpu_flags()
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp") if f in flags]
    return (f"{platform.machine()}, {os.cpu_count()} cores, features: {', '.join(have) or 'unknown'}; int8 "
            f"dot-product instructions: {'yes' if cpu_has_int8_dot() else 'no'}")


# ----------------------------------------------------------------------------------------------- sessions
def _proto(onnx_model: OnnxLike):
    import onnx

    if isinstance(onnx_model, bytes):
        return onnx.ModelProto.FromString(onnx_model)
    if isinstance(onnx_model, (str, os.PathLike)):
        return onnx.load_model(str(onnx_model))
    return onnx_model


def _bytes(onnx_model: OnnxLike) -> bytes:
    if isinstance(onnx_model, bytes):
        return onnx_model
    if isinstance(onnx_model, (str, os.PathLike)):
        return _proto(onnx_model).SerializeToString()  # loads external data too
    return onnx_model.SerializeToString()


def session(onnx_model: OnnxLike, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads (default 1), one
    inter-op thread, sequential execution and all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    src = str(onnx_model) if isinstance(onnx_model, (str, os.PathLike)) else _bytes(onnx_model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"onnxruntime: cannot load the model: {first[:300]}") from e


def _feed(sess, x: torch.Tensor) -> dict[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    return {inp.name: x.detach().cpu().numpy().astype(dtype, copy=False)}


def ort_predict(sess, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits (float32) of the session on ``x``, batched."""
    outs = [torch.from_numpy(sess.run(None, _feed(sess, x[i : i + batch_size]))[0].astype(np.float32))
            for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def ort_accuracy(sess, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` the session classifies as ``y``."""
    if len(y) == 0:
        return 0.0
    return int((ort_predict(sess, x).argmax(1) == y).sum()) / len(y)


def ort_latency(sess, example: torch.Tensor, min_run_time: float = 0.3, warmup: int = 10) -> tuple[float, float, int]:
    """(median ms, IQR ms, runs) of one ``sess.run`` on ``example``: torch.utils.benchmark's Timer around the call,
    as torch latency is measured (the session's own intra-op thread count applies)."""
    from torch.utils import benchmark

    feed = _feed(sess, example)
    for _ in range(warmup):
        sess.run(None, feed)
    timer = benchmark.Timer(stmt="sess.run(None, feed)", globals={"sess": sess, "feed": feed}, num_threads=1)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3, m.iqr * 1e3, len(m.times) * m.number_per_run


# ------------------------------------------------------------------------------------------ quantization
class OrtDynamicInt8(StepConfig):
    """ONNX Runtime dynamic int8: int8 weights, activations quantized per call (no calibration)."""

    kind: Literal["ort_dynamic_int8"] = "ort_dynamic_int8"
    per_channel: bool = True
    reduce_range: bool | Literal["auto"] = "auto"  # auto: 7-bit weights where the CPU lacks VNNI / dotprod
    weight_type: Literal["qint8", "quint8"] = "qint8"
    # Linear-like and recurrent layers; convolutions stay float: ORT's dynamic ConvInteger was 8x slower than its
    # fp32 Conv at batch 32 on digits-cnn (use OrtStaticInt8 for convs). None: every op type ORT can quantize.
    op_types: tuple[str, ...] | None = ("MatMul", "Gemm", "LSTM", "GRU", "Attention")


class OrtStaticInt8(StepConfig):
    """ONNX Runtime static int8 in QDQ format: weights and activations int8, scales from the calibration split."""

    kind: Literal["ort_static_int8"] = "ort_static_int8"
    per_channel: bool = True
    reduce_range: bool | Literal["auto"] = "auto"
    activation_type: Literal["quint8", "qint8"] = "quint8"
    weight_type: Literal["qint8", "quint8"] = "qint8"
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calib_samples: int = Field(512, ge=1, le=100_000)  # at most this many calibration samples (all if fewer)
    calib_batch_size: int = Field(64, ge=1, le=4096)
    # the layers with weights; LayerNorm/Softmax/GELU/Add stay float (quantizing them too cost the ViT argmax
    # agreement with fp32: 98.9% vs 99.4% measured). None: every op type ORT can quantize.
    op_types: tuple[str, ...] | None = ("Conv", "Gemm", "MatMul")


OrtQuantConfig = Union[OrtDynamicInt8, OrtStaticInt8]


def resolve_reduce_range(value: bool | str) -> bool:
    """``"auto"`` -> True on CPUs without int8 dot-product instructions (see module docstring)."""
    return (not cpu_has_int8_dot()) if value == "auto" else bool(value)


class _CalibReader:
    """A ``CalibrationDataReader`` over a tensor of calibration inputs, ``batch_size`` samples per call."""

    def __init__(self, input_name: str, x: torch.Tensor, batch_size: int) -> None:
        self.input_name = input_name
        self.batches = [x[i : i + batch_size].detach().cpu().numpy().astype(np.float32)
                        for i in range(0, len(x), batch_size)]
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[name]


def ort_quantize(onnx_model: OnnxLike, cfg: OrtQuantConfig, calib_x: torch.Tensor | None = None) -> bytes:
    """The serialized int8 .onnx model of ``onnx_model`` (an fp32 export) under ``cfg``; static needs ``calib_x``
    (the calibration split's inputs). The input is not modified."""
    import logging

    from onnxruntime import quantization as q

    proto = _proto(onnx_model)
    fp32 = all(i.type.tensor_type.elem_type == 1 for i in proto.graph.input)
    if not fp32:
        raise CompressionError(f"{cfg.kind}: ONNX Runtime int8 quantization needs an fp32 model; export the "
                               "float32 model (not fp16/bf16)")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
                         "QLinearMatMul", "DynamicQuantizeLinear") for n in proto.graph.node):
        raise CompressionError(f"{cfg.kind}: the model is already quantized; quantize the fp32 export")
    reduce_range = resolve_reduce_range(cfg.reduce_range)
    op_types = list(cfg.op_types) if cfg.op_types else None
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer logs advice through the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="ortq-") as tmp, contextlib.redirect_stdout(io.StringIO()):
            src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            try:
                q.quant_pre_process(proto, str(src), skip_symbolic_shape=False)
            except Exception:  # pre-processing only helps; quantize the export as it is if it fails
                src.write_bytes(proto.SerializeToString())
            if isinstance(cfg, OrtDynamicInt8):
                q.quantize_dynamic(str(src), str(out), op_types_to_quantize=op_types, per_channel=cfg.per_channel,
                                   reduce_range=reduce_range, weight_type=_quant_type(cfg.weight_type))
            else:
                if calib_x is None or len(calib_x) == 0:
                    raise CompressionError("ort_static_int8: calibration data is needed (the calibration split)")
                cx = calib_x[: cfg.calib_samples]
                bs = min(cfg.calib_batch_size, len(cx))
                if cfg.calibrate_method != "minmax":  # ORT's histogram collectors need equal-sized batches
                    cx = cx[: len(cx) - len(cx) % bs]
                reader = _CalibReader(proto.graph.input[0].name, cx, bs)
                method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                          "percentile": q.CalibrationMethod.Percentile}[cfg.calibrate_method]
                q.quantize_static(str(src), str(out), reader, quant_format=q.QuantFormat.QDQ,
                                  op_types_to_quantize=op_types, per_channel=cfg.per_channel,
                                  reduce_range=reduce_range, activation_type=_quant_type(cfg.activation_type),
                                  weight_type=_quant_type(cfg.weight_type), calibrate_method=method)
            return out.read_bytes()
    except CompressionError:
        raise
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"{cfg.kind}: ONNX Runtime quantization failed: {type(e).__name__}: "
                               f"{first[:300]}") from e
    finally:
        root.setLevel(level)


# ------------------------------------------------------------------------------------------- measurement
_ONNX_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 10: 16, 11: 64, 16: 16}
_ONNX_DTYPE = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
               10: "float16", 11: "float64", 16: "bfloat16"}
_QPARAM_SUFFIXES = ("_scale", "_zero_point")  # ORT's quantizer names quantization parameters this way


def onnx_layer_stats(onnx_model: OnnxLike) -> list[LayerStats]:
    """One row per weight tensor stored in the ONNX file (initializers with more than one element), typed by the
    operator that consumes it; ORT's quantization scales and zero points are left out (they are in the size)."""
    from onnx import numpy_helper

    proto = _proto(onnx_model)
    consumer: dict[str, str] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumer.setdefault(name, node.op_type)
    rows = []
    for init in proto.graph.initializer:
        numel = int(np.prod(init.dims)) if len(init.dims) else 1
        if numel <= 1 or init.name.endswith(_QPARAM_SUFFIXES):
            continue
        arr = numpy_helper.to_array(init)
        nonzero = int(np.count_nonzero(arr))
        rows.append(LayerStats(
            name=init.name, type=consumer.get(init.name, "initializer"), params=numel, nonzero=nonzero,
            sparsity=round(1.0 - nonzero / numel, 6), dtype=_ONNX_DTYPE.get(init.data_type, str(init.data_type)),
            bits=_ONNX_BITS.get(init.data_type, 32),
        ))
    return rows


def measure_ort(
    onnx_model: OnnxLike | nn.Module,
    data: Any,
    name: str = "model",
    batch_size: int = 1,
    threads: int = 1,
    with_latency: bool = True,
    min_run_time: float = 0.3,
    source: nn.Module | None = None,
) -> ModelStats:
    """Measure a model in ONNX Runtime on ``data.test``: accuracy and latency through onnxruntime, size = the .onnx
    bytes (+ external data when given a path). A torch model is exported first. FLOPs are those of ``source`` (the
    torch model the file came from; the model itself when a torch model is given), 0 when unknown."""
    if isinstance(onnx_model, nn.Module):
        source = onnx_model if source is None else source
        onnx_model = to_onnx(onnx_model, data.test.x[:2])
    if isinstance(onnx_model, (str, os.PathLike)):
        size = onnx_size_bytes(onnx_model)
    else:
        size = len(_bytes(onnx_model))
    sess = session(onnx_model, threads=threads)
    x, y = data.test.x, data.test.y
    example = x[:batch_size]
    if len(example) < batch_size:
        example = x.repeat((batch_size + len(x) - 1) // len(x), *[1] * (x.dim() - 1))[:batch_size]
    lat = ort_latency(sess, example, min_run_time=min_run_time) if with_latency else None
    layers = onnx_layer_stats(onnx_model)
    total_flops, nonzero_flops = torch_flops(source, x[:1]) if source is not None else (0, 0)
    return ModelStats(
        model=name, runtime="onnxruntime",
        params=sum(layer.params for layer in layers), nonzero_params=sum(layer.nonzero for layer in layers),
        size_bytes=size, latency_ms=lat[0] if lat else None, latency_iqr_ms=lat[1] if lat else None,
        latency_runs=lat[2] if lat else None, batch_size=batch_size, threads=threads,
        accuracy=ort_accuracy(sess, x, y), flops=total_flops, nonzero_flops=nonzero_flops, layers=layers,
    )


def measure_in(runtime: str, model: nn.Module, data: Any, **kwargs) -> ModelStats:
    """``measure`` with a runtime choice: "torch" (compression_core.measure) or "onnxruntime" (export + ORT)."""
    if runtime == "torch":
        from .measure import measure

        return measure(model, data, **kwargs)
    if runtime == "onnxruntime":
        return measure_ort(model, data, **kwargs)
    raise CompressionError(f"runtime: unknown {runtime!r}; choose one of {', '.join(RUNTIMES)}")


# ------------------------------------------------------------------------------------------ the lesson
def runtime_comparison(model_name: str = "mnist-lenet300", min_run_time: float = 0.1, rounds: int = 1,
                       model: nn.Module | None = None) -> list[dict[str, Any]]:
    """Measure one workload (a reference) as fp32 and int8 in torch and in ONNX Runtime, all in this run, 1 thread.

    Rows {path, runtime, size_bytes, accuracy, agreement (argmax vs torch fp32), ms_b1, ms_b32, size_ratio,
    speedup_b1, speedup_b32}; ratios are against fp32 in the same runtime. Paths: torch fp32 / int8 dynamic /
    int8 static (compression_core.quantize), ONNX Runtime fp32 / int8 dynamic / int8 static QDQ. Latencies are
    timed round-robin ``rounds`` times (median of the per-round medians), so drifting load on a shared machine
    hits every path alike. ``model``: a compressed version of the sample model to use instead of the baseline.
    """
    from .measure import accuracy, latency, predict, size_bytes
    from .workload import resolve_workload

    sm = resolve_workload(model_name)
    base_model = model if model is not None else sm.model
    x, y, calib = sm.test.x, sm.test.y, sm.calib.x
    b1, b32 = x[:1], _batch(x, 32)
    ref = predict(base_model, x).argmax(1)
    rows: list[dict[str, Any]] = []
    timers: list = []

    def torch_row(path: str, m: nn.Module | None) -> None:
        if m is None:
            return
        rows.append({"path": path, "runtime": "torch", "size_bytes": size_bytes(m), "accuracy": accuracy(m, x, y),
                     "agreement": float((predict(m, x).argmax(1) == ref).float().mean())})
        timers.append(lambda mrt, m=m: (latency(m, b1, min_run_time=mrt)[0], latency(m, b32, min_run_time=mrt)[0]))

    def ort_row(path: str, blob: bytes) -> None:
        sess = session(blob)
        rows.append({"path": path, "runtime": "onnxruntime", "size_bytes": len(blob),
                     "accuracy": ort_accuracy(sess, x, y),
                     "agreement": float((ort_predict(sess, x).argmax(1) == ref).float().mean())})
        timers.append(lambda mrt, s=sess: (ort_latency(s, b1, min_run_time=mrt)[0],
                                           ort_latency(s, b32, min_run_time=mrt)[0]))

    torch_row("fp32", base_model)
    torch_row("int8 dynamic", torch_dynamic_int8(base_model, sm))
    torch_row("int8 static", torch_static_int8(base_model, sm))
    fp32 = to_onnx(base_model, x[:2]).SerializeToString()
    ort_row("fp32", fp32)
    ort_row("int8 dynamic", ort_quantize(fp32, OrtDynamicInt8()))
    ort_row("int8 static QDQ", ort_quantize(fp32, OrtStaticInt8(), calib_x=calib))
    times = [[t(min_run_time) for t in timers] for _ in range(max(rounds, 1))]
    for i, r in enumerate(rows):
        r["ms_b1"] = float(np.median([rnd[i][0] for rnd in times]))
        r["ms_b32"] = float(np.median([rnd[i][1] for rnd in times]))
    base = {r["runtime"]: r for r in rows if r["path"] == "fp32"}
    for r in rows:
        b = base[r["runtime"]]
        r["size_ratio"] = r["size_bytes"] / b["size_bytes"]
        r["speedup_b1"] = b["ms_b1"] / r["ms_b1"]
        r["speedup_b32"] = b["ms_b32"] / r["ms_b32"]
    return rows


def fastest_int8(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which int8 path of a ``runtime_comparison`` is fastest at batch 32, overall and per runtime, and whether
    each runtime's fastest int8 is at least as fast as fp32 in that runtime (the goal)."""
    int8 = [r for r in rows if r["path"] != "fp32"]
    best = min(int8, key=lambda r: r["ms_b32"])
    per_runtime = {}
    for rt in sorted({r["runtime"] for r in int8}):
        b = min((r for r in int8 if r["runtime"] == rt), key=lambda r: r["ms_b32"])
        per_runtime[rt] = {"path": b["path"], "ms_b32": b["ms_b32"], "speedup_b32": b["speedup_b32"],
                           "at_least_fp32_speed": b["speedup_b32"] >= 1.0}
    return {"runtime": best["runtime"], "path": best["path"], "ms_b32": best["ms_b32"],
            "speedup_b32": best["speedup_b32"], "at_least_fp32_speed": best["speedup_b32"] >= 1.0,
            "per_runtime": per_runtime,
            "goal_met": any(b["at_least_fp32_speed"] for b in per_runtime.values())}


def _batch(x: torch.Tensor, n: int) -> torch.Tensor:
    if len(x) >= n:
        return x[:n]
    return x.repeat((n + len(x) - 1) // len(x), *[1] * (x.dim() - 1))[:n]


def torch_dynamic_int8(model: nn.Module, sm: Any = None) -> nn.Module:
    """torch's dynamic int8 of ``model`` (a copy): ``compression_core.quantize``'s DynamicInt8Config when that
    family is present, else ``torch.ao.quantization.quantize_dynamic`` on Linear/LSTM directly."""
    import warnings

    try:
        from .quantize import DynamicInt8Config, quantize
    except ImportError:
        from .technique import clone_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
            return torch.ao.quantization.quantize_dynamic(clone_model(model).eval(), {nn.Linear, nn.LSTM},
                                                          dtype=torch.qint8)
    return quantize(model, DynamicInt8Config(), sm)


def torch_static_int8(model: nn.Module, sm: Any) -> nn.Module | None:
    """torch's eager static int8 (calibrated on the workload ``sm``'s calib split) via ``compression_core.quantize``; None when
    that family or its StaticInt8Config is not available."""
    try:
        from .quantize import StaticInt8Config, quantize
    except ImportError:
        return None
    return quantize(model, StaticInt8Config(), sm)


def why_runtime_matters(model_name: str = "mnist-lenet300", rows: list[dict[str, Any]] | None = None) -> str:
    """A plain-language explanation, for the Learn page, of why the runtime decides whether int8 is faster,
    with a table measured now on this machine (``runtime_comparison``; pass ``rows`` to reuse a measurement)."""
    rows = rows if rows is not None else runtime_comparison(model_name)
    table = ["| runtime | model | size | accuracy | ms @ batch 1 | ms @ batch 32 | vs fp32 @1 | vs fp32 @32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['runtime']} | {r['path']} | {r['size_bytes'] / 1024:,.0f} KB | {r['accuracy'] * 100:.1f}% "
                     f"| {r['ms_b1']:.3f} | {r['ms_b32']:.3f} | {r['speedup_b1']:.2f}x | {r['speedup_b32']:.2f}x |")
    t = {(r["runtime"], r["path"]): r for r in rows}
    tq, oq = t[("torch", "int8 dynamic")], t[("onnxruntime", "int8 dynamic")]
    best = fastest_int8(rows)
    return "\n".join([
        "### Why the runtime matters for int8",
        "",
        "Quantizing to int8 makes the weights 4x smaller. Whether it also makes the model *faster* depends on "
        "the code that runs it. An int8 model only wins if the runtime has int8 kernels that beat its fp32 ones "
        "on this CPU, and if the cost of converting activations to int8 and back is small next to the saved work.",
        "",
        "Fast int8 matrix multiplication on x86 relies on an int8 dot-product instruction (VNNI: `vpdpbusd`), "
        "which multiplies 8-bit numbers and adds them straight into 32-bit sums. CPUs with only AVX2 have to use "
        "`vpmaddubsw`, which adds pairs into 16-bit sums first (it can overflow, which is why ONNX Runtime offers "
        "`reduce_range`, 7-bit weights) and needs extra instructions to widen them, so int8 is barely cheaper "
        "than fp32 there, and the quantize/dequantize steps around each layer can make it slower. Runtimes also "
        "differ in overhead: torch runs a dynamic int8 Linear as its own call that finds the activations' range, "
        "quantizes them, multiplies and dequantizes, with Python and dispatcher work between layers, which "
        "dominates for small layers at batch 1; ONNX Runtime plans the whole graph once when the session starts "
        "and fuses quantize, multiply and dequantize into its kernels.",
        "",
        ("This machine's CPU has an int8 dot-product instruction, so the int8 arithmetic itself is cheap here: "
         "the differences below come mostly from each runtime's overheads, and on an AVX2-only CPU int8 gains "
         "less still." if cpu_has_int8_dot() else
         "This machine's CPU has no int8 dot-product instruction (AVX2 only): exactly the case where the "
         "runtime decides whether int8 pays off."),
        "",
        f"Measured just now on this machine ({cpu_summary()}), `{model_name}`, 1 thread, median latency; "
        "'vs fp32' is the speed-up over fp32 in the same runtime (above 1 = faster):",
        "",
        *table,
        "",
        f"Here torch's dynamic int8 is {_times(tq['speedup_b1'])} fp32 at batch 1 and {_times(tq['speedup_b32'])} "
        f"fp32 at batch 32; ONNX Runtime's dynamic int8 is {_times(oq['speedup_b1'])} its fp32 at batch 1 and "
        f"{_times(oq['speedup_b32'])} its fp32 at batch 32, and {tq['ms_b1'] / oq['ms_b1']:.1f}x faster than torch's "
        f"int8 at batch 1. The fastest int8 path at batch 32 is {best['runtime']} {best['path']} "
        f"({best['ms_b32']:.3f} ms, {_times(best['speedup_b32'])} fp32 in {best['runtime']}). "
        "The lesson: size and accuracy travel with the model, speed does not: "
        "measure int8 in the runtime you will deploy with.",
        "",
        "(The machine is shared with other work, so absolute times are noisy; ratios are measured in one run.)",
    ])


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x as fast as" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"


__all__ = ["OrtDynamicInt8", "OrtQuantConfig", "OrtStaticInt8", "RUNTIMES", "cpu_flags", "cpu_has_int8_dot",
           "cpu_summary", "fastest_int8", "measure_in", "measure_ort", "onnx_layer_stats", "ort_accuracy",
           "ort_latency", "ort_predict", "ort_quantize", "resolve_reduce_range", "runtime_comparison", "session",
           "torch_dynamic_int8", "torch_static_int8", "why_runtime_matters"]
