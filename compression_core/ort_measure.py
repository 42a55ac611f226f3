"""Measuring in ONNX Runtime: ``measure_ort`` (the workload's metric, latency and the .onnx bytes, typed like
``measure``), ``measure_in`` (a runtime choice), and ``runtime_comparison``: one workload as fp32 and int8 in torch
and in ONNX Runtime, all timed in this run (the numbers the Learn page explains and ``benchmarks.runtimes``
prints)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch import nn

from . import inputs as I
from .errors import CompressionError
from .measure import (ModelStats, accuracy, flops as torch_flops, latency, measure, peak_ram_pair, predict,
                      size_bytes)
from .onnx_export import to_onnx
from .onnx_io import onnx_size_bytes
from .quantize import DynamicInt8Config, StaticInt8Config, quantize
from .workload import Workload, resolve_workload
from .ort_deploy import deploy_onnx, deploy_proto
from .ort_engine import OrtModule
from .ort_nodes import onnx_layer_stats
from .ort_quantize import ort_quantize
from .ort_session import OnnxLike, as_bytes, ort_accuracy, ort_latency, ort_predict, session

RUNTIMES = ("torch", "onnxruntime")


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
    """Measure a model in ONNX Runtime on ``data.test`` (a Workload or splits): the workload's metric (top-1
    accuracy by default) and latency through onnxruntime, size = the .onnx bytes (+ external data when given a
    path). A torch model is deployed first (``deploy_proto``: quantized models as what they are). FLOPs are those of
    ``source`` (the torch model the file came from; the model itself when a torch model is given), 0 when unknown."""
    test = data.test
    if isinstance(onnx_model, nn.Module):
        source = onnx_model if source is None else source
        onnx_model = deploy_proto(onnx_model, I.head(test.x, 2)) if not isinstance(onnx_model, OrtModule) \
            else onnx_model.onnx_bytes
    if isinstance(onnx_model, (str, os.PathLike)):
        size = onnx_size_bytes(onnx_model)
    else:
        size = len(as_bytes(onnx_model))
    sess = session(onnx_model, threads=threads)
    x, y = test.x, test.y
    lat = ort_latency(sess, I.head(x, batch_size), min_run_time=min_run_time) if with_latency else None
    layers = onnx_layer_stats(onnx_model)
    flops_of = source if source is not None and not isinstance(source, OrtModule) else None
    total_flops, nonzero_flops = torch_flops(flops_of, I.head(x, 1)) if flops_of is not None else (0, 0)
    metric = getattr(data, "metric", None)
    if callable(metric) and not isinstance(data, type):
        value = float(metric(ort_predict(sess, x), y))
    else:
        value = ort_accuracy(sess, x, y)
    ram = peak_ram_pair(onnx_model, x, batch_size)  # initializers + a liveness walk over the graph
    return ModelStats(
        model=name, runtime="onnxruntime",
        params=sum(layer.params for layer in layers), nonzero_params=sum(layer.nonzero for layer in layers),
        size_bytes=size, latency_ms=lat[0] if lat else None, latency_iqr_ms=lat[1] if lat else None,
        latency_runs=lat[2] if lat else None, batch_size=batch_size, threads=threads,
        accuracy=value, metric=getattr(metric, "name", "accuracy"),
        higher_is_better=bool(getattr(metric, "higher_is_better", True)),
        metric_percent=bool(getattr(metric, "percent", True)), flops=total_flops, nonzero_flops=nonzero_flops,
        layers=layers,
        peak_ram_bytes=ram[0], peak_ram_bytes_b1=ram[1],
    )


def measure_in(runtime: str, model: nn.Module, data: Any, **kwargs) -> ModelStats:
    """``measure`` with a runtime choice: "torch" (compression_core.measure) or "onnxruntime" (export + ORT)."""
    if runtime == "torch":
        return measure(model, data, **kwargs)
    if runtime == "onnxruntime":
        return measure_ort(model, data, **kwargs)
    raise CompressionError(f"runtime: unknown {runtime!r}; choose one of {', '.join(RUNTIMES)}")


def runtime_comparison(workload: str | Workload, min_run_time: float = 0.1, rounds: int = 1,
                       model: nn.Module | None = None, progress=None) -> list[dict[str, Any]]:
    """Measure one workload (a reference or a Workload) as fp32 and int8 in torch and in ONNX Runtime, all in this
    run, 1 thread.

    Rows {path, runtime, size_bytes, accuracy, agreement (argmax vs torch fp32), ms_b1, ms_b32, size_ratio,
    speedup_b1, speedup_b32, vs_torch_fp32_b1, vs_torch_fp32_b32}; ``speedup_*`` are against fp32 in the same
    runtime, ``vs_torch_fp32_*`` against the torch fp32 model (what a user starts from). Paths: torch fp32 / int8
    dynamic / int8 static (graph mode); ONNX Runtime fp32 / int8 dynamic / int8 static QDQ (ORT's calibration) /
    int8 static QDQ with torch's ranges (the torch static model deployed, ``deploy_onnx``). Latencies are timed
    round-robin ``rounds`` times (median of the per-round medians), so drifting load on a shared machine hits every
    path alike. ``model``: a compressed version of the workload's model to use instead of the baseline.
    """
    say = progress or (lambda msg: None)
    sm = resolve_workload(workload)
    model_name = sm.name
    base_model = model if model is not None else sm.model
    x, y, calib = sm.test.x, sm.test.y, sm.calib.x
    b1, b32 = I.head(x, 1), I.head(x, 32)
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

    say(f"{model_name}: quantizing (torch dynamic, torch static, ONNX Runtime dynamic and static)")
    torch_row("fp32", base_model)
    torch_row("int8 dynamic", _or_none(torch_dynamic_int8, base_model, sm))
    static = _or_none(torch_static_int8, base_model, sm)
    torch_row("int8 static", static)
    fp32 = to_onnx(base_model, I.head(x, 2)).SerializeToString()
    ort_row("fp32", fp32)
    ort_row("int8 dynamic", ort_quantize(fp32, "dynamic"))
    ort_row("int8 static QDQ", ort_quantize(fp32, "static", calib_x=calib))
    if static is not None:
        ort_row("int8 static QDQ, torch ranges", deploy_onnx(static, sm))
    say(f"{model_name}: timing {len(timers)} paths x {max(rounds, 1)} rounds at batch 1 and 32")
    times = [[t(min_run_time) for t in timers] for _ in range(max(rounds, 1))]
    for i, r in enumerate(rows):
        r["ms_b1"] = float(np.median([rnd[i][0] for rnd in times]))
        r["ms_b32"] = float(np.median([rnd[i][1] for rnd in times]))
    base = {r["runtime"]: r for r in rows if r["path"] == "fp32"}
    for r in rows:
        b, t = base[r["runtime"]], base["torch"]
        r["size_ratio"] = r["size_bytes"] / b["size_bytes"]
        r["speedup_b1"] = b["ms_b1"] / r["ms_b1"]
        r["speedup_b32"] = b["ms_b32"] / r["ms_b32"]
        r["vs_torch_fp32_b1"] = t["ms_b1"] / r["ms_b1"]
        r["vs_torch_fp32_b32"] = t["ms_b32"] / r["ms_b32"]
    return rows


def _or_none(fn, *args):
    try:
        return fn(*args)
    except CompressionError:  # a technique that refuses this model: no row
        return None


def fastest_int8(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which int8 path of a ``runtime_comparison`` is fastest at batch 32, overall and per runtime; whether each
    runtime's fastest int8 is at least as fast as fp32 in that runtime, and whether the fastest int8 path offered
    is at least as fast as the torch fp32 model (``goal_met_vs_torch_fp32``)."""
    int8 = [r for r in rows if r["path"] != "fp32"]
    best = min(int8, key=lambda r: r["ms_b32"])
    per_runtime = {}
    for rt in sorted({r["runtime"] for r in int8}):
        b = min((r for r in int8 if r["runtime"] == rt), key=lambda r: r["ms_b32"])
        per_runtime[rt] = {"path": b["path"], "ms_b32": b["ms_b32"], "speedup_b32": b["speedup_b32"],
                           "at_least_fp32_speed": b["speedup_b32"] >= 1.0}
    return {"runtime": best["runtime"], "path": best["path"], "ms_b32": best["ms_b32"],
            "speedup_b32": best["speedup_b32"], "at_least_fp32_speed": best["speedup_b32"] >= 1.0,
            "vs_torch_fp32_b32": best.get("vs_torch_fp32_b32"),
            "goal_met_vs_torch_fp32": best.get("vs_torch_fp32_b32", 0.0) >= 1.0,
            "per_runtime": per_runtime,
            "goal_met": any(b["at_least_fp32_speed"] for b in per_runtime.values())}


def torch_dynamic_int8(model: nn.Module, sm: Any = None) -> nn.Module:
    """torch's dynamic int8 of ``model`` (a copy): ``compression_core.quantize``'s DynamicInt8Config."""
    return quantize(model, DynamicInt8Config(), sm)


def torch_static_int8(model: nn.Module, sm: Any) -> nn.Module:
    """torch's static int8 in graph mode (calibrated on the workload ``sm``'s calib split) via
    ``compression_core.quantize``'s StaticInt8Config."""
    return quantize(model, StaticInt8Config(), sm)


__all__ = ["RUNTIMES", "fastest_int8", "measure_in", "measure_ort", "runtime_comparison", "torch_dynamic_int8",
           "torch_static_int8"]
