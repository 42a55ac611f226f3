"""Quantization: accuracy, file size and latency (batch 1 and 32, 1 thread) of every method on every sample model
it applies to, a fake-quant bits sweep 8..2, and PTQ vs QAT at low bit widths on digits-cnn.

    python -m benchmarks.quantization [--json]

Latency ratios are quantized / fp32 medians (torch.utils.benchmark, 1 thread), the two timed alternately in
5 rounds and the best round of each compared (the machine's 2 cores are shared); file sizes are bytes of the saved state_dict. Fake-quant rows are simulated: their size is the theoretical one.
"""

from __future__ import annotations

import time

import torch

import sample_models
from compression_core import latency, measure
from compression_core.quantize import (DynamicInt8Config, FakeQuantConfig, HalfPrecisionConfig, Int4Config, QATConfig,
                                       StaticInt8Config, engine, quantize)

from .common import emit, environment, parser, table

MIN_RUN_TIME = 0.4


def _methods(name: str, classifier: str, first: str) -> list[tuple[str, object]]:
    methods: list[tuple[str, object]] = [
        ("dynamic int8", DynamicInt8Config()),
        ("static int8", StaticInt8Config()),
    ]
    if name.startswith("digits") and name != "digits-lstm":
        methods.append(("QAT int8 (3 ep)", QATConfig(epochs=3)))
    methods += [("fp16", HalfPrecisionConfig(dtype="fp16")), ("bf16", HalfPrecisionConfig(dtype="bf16"))]
    if name != "digits-lstm":  # its only Linear is the classifier, which int4 leaves alone by default
        methods.append(("int4 g64", Int4Config()))
        methods.append(("int4 g64, first+last int8", Int4Config(overrides={first: 8, classifier: 8})))
    return methods


def _paired(base, q, x: torch.Tensor, rounds: int = 5) -> dict[str, float]:
    """fp32 and quantized medians timed alternately, best round of each: on 2 shared cores another process can
    slow one side of an unpaired comparison several-fold, so each ratio compares timings taken moments apart."""
    out = {}
    for b in (1, 32):
        tb, tq = [], []
        for _ in range(rounds):
            tb.append(latency(base, x[:b], threads=1, min_run_time=MIN_RUN_TIME / rounds)[0])
            tq.append(latency(q, x[:b], threads=1, min_run_time=MIN_RUN_TIME / rounds)[0])
        out[f"lat_b{b}_ms"], out[f"lat_ratio_b{b}"] = min(tq), min(tq) / min(tb)
    return out


def methods_table() -> list[dict]:
    rows = []
    for name in sample_models.MODEL_NAMES:
        sm = sample_models.load(name)
        x = sm.data.test.x
        base = measure(sm.model, sm.data, name=name, with_latency=False)
        fp = _paired(sm.model, sm.model, x)  # fp32 timed the same way as the quantized models (best round)
        b1, b32 = fp["lat_b1_ms"], fp["lat_b32_ms"]
        first = next(n for n, m in sm.model.named_modules() if isinstance(m, torch.nn.Linear))
        rows.append({"model": name, "method": "fp32", "accuracy": base.accuracy, "drop_pt": 0.0, "size_bytes":
                     base.size_bytes, "size_ratio": 1.0, "lat_b1_ms": b1, "lat_b32_ms": b32, "lat_ratio_b1": 1.0,
                     "lat_ratio_b32": 1.0, "seconds": 0.0})
        for label, cfg in _methods(name, sm.info.classifier, first):
            t0 = time.perf_counter()
            q = quantize(sm.model, cfg, sm.data, sm.info)
            took = time.perf_counter() - t0
            s = measure(q, sm.data, name=name, with_latency=False)
            rows.append({"model": name, "method": label, "kind": cfg.kind, "accuracy": s.accuracy,
                         "drop_pt": 100 * (base.accuracy - s.accuracy), "size_bytes": s.size_bytes,
                         "size_ratio": s.size_bytes / base.size_bytes, **_paired(sm.model, q, x), "seconds": took})
    return rows


def bits_sweep() -> list[dict]:
    rows = []
    for name in sample_models.MODEL_NAMES:
        sm = sample_models.load(name)
        base = measure(sm.model, sm.data, name=name, with_latency=False)
        row = {"model": name, "fp32": base.accuracy}
        for bits in range(8, 1, -1):
            q = quantize(sm.model, FakeQuantConfig(bits=bits), sm.data, sm.info)
            s = measure(q, sm.data, name=name, with_latency=False)
            row[f"w{bits}"] = s.accuracy
            row[f"w{bits}_theoretical_ratio"] = s.theoretical_size_bytes / base.size_bytes
        q = quantize(sm.model, FakeQuantConfig(bits=4, activation_bits=4), sm.data, sm.info)
        row["w4a4"] = measure(q, sm.data, with_latency=False).accuracy
        rows.append(row)
    return rows


def ptq_vs_qat(name: str = "digits-cnn", epochs: int = 3) -> list[dict]:
    sm = sample_models.load(name)
    base = measure(sm.model, sm.data, with_latency=False).accuracy
    rows = []
    for bits in (4, 3, 2):
        fq = measure(quantize(sm.model, FakeQuantConfig(bits=bits, include_classifier=True), sm.data, sm.info),
                     sm.data, with_latency=False).accuracy
        ptq = measure(quantize(sm.model, StaticInt8Config(weight_bits=bits), sm.data, sm.info), sm.data,
                      with_latency=False).accuracy
        qat = measure(quantize(sm.model, QATConfig(weight_bits=bits, epochs=epochs), sm.data, sm.info), sm.data,
                      with_latency=False).accuracy
        rows.append({"model": name, "weight_bits": bits, "fp32": base, "fake_quant_ptq_weights_only": fq,
                     "static_ptq": ptq, f"qat_{epochs}_epochs": qat, "qat_gain_pt": 100 * (qat - ptq)})
    return rows


CHECKS = [  # (model, method, max drop in points, max size ratio, max batch-32 latency ratio)
    ("mnist-lenet300", "dynamic int8", 0.5, 0.30, None),
    ("digits-cnn", "static int8", 1.0, 0.35, 0.7),
    ("mnist-cnn", "static int8", 1.0, 0.35, 0.7),
    ("mnist-lenet300", "int4 g64", 2.0, 0.16, None),
]


def checks(rows: list[dict]) -> list[dict]:
    out = []
    for model, method, drop, size, lat in CHECKS:
        r = next(r for r in rows if r["model"] == model and r["method"] == method)
        ok = r["drop_pt"] <= drop and r["size_ratio"] <= size and (lat is None or r["lat_ratio_b32"] <= lat)
        out.append({"model": model, "method": method, "drop_pt": r["drop_pt"], "max_drop_pt": drop,
                    "size_ratio": r["size_ratio"], "max_size_ratio": size, "lat_ratio_b32": r["lat_ratio_b32"],
                    "max_lat_ratio_b32": lat, "pass": ok})
    return out


def run() -> dict:
    engine_name = engine()
    t0 = time.perf_counter()
    methods = methods_table()
    result = {"environment": {**environment(), "quantized_engine": engine_name}, "methods": methods,
              "checks": checks(methods), "bits_sweep": bits_sweep(), "ptq_vs_qat": ptq_vs_qat()}
    result["seconds"] = time.perf_counter() - t0
    return result


def render(r: dict) -> str:
    """The text tables of a ``run()`` result."""
    parts = [
        f"engine {r['environment']['quantized_engine']}, torch {r['environment']['torch']}, latency 1 thread, "
        f"medians (torch.utils.benchmark); ratios vs fp32 timed alternately, best of 5 rounds each",
        table(r["methods"], [("model", "model", ""), ("method", "method", ""), ("accuracy", "acc", ".4f"),
                             ("drop_pt", "drop (pt)", "+.2f"), ("size_bytes", "file (B)", ","),
                             ("size_ratio", "file x", ".3f"), ("lat_ratio_b1", "lat x b1", ".2f"),
                             ("lat_ratio_b32", "lat x b32", ".2f"), ("lat_b32_ms", "ms b32", ".3f")]),
        "\nissue targets:",
        table(r["checks"], [("model", "model", ""), ("method", "method", ""), ("drop_pt", "drop", "+.2f"),
                            ("max_drop_pt", "<=", ".1f"), ("size_ratio", "file x", ".3f"),
                            ("max_size_ratio", "<=", ".2f"), ("lat_ratio_b32", "lat x b32", ".2f"),
                            ("max_lat_ratio_b32", "<=", ".1f"), ("pass", "pass", "")]),
        "\nfake-quant bits sweep (weights per-channel symmetric, simulated; classifier kept fp32; accuracy):",
        table(r["bits_sweep"], [("model", "model", ""), ("fp32", "fp32", ".4f")]
              + [(f"w{b}", f"w{b}", ".4f") for b in range(8, 1, -1)] + [("w4a4", "w4a4", ".4f")]),
        "\nPTQ vs QAT at low weight bits on digits-cnn (int8 kernels, weights restricted to the b-bit grid):",
        table(r["ptq_vs_qat"], [("weight_bits", "bits", "d"), ("fp32", "fp32", ".4f"),
                                ("fake_quant_ptq_weights_only", "fake-quant PTQ", ".4f"),
                                ("static_ptq", "static PTQ", ".4f"), ("qat_3_epochs", "QAT 3 ep", ".4f"),
                                ("qat_gain_pt", "QAT gain (pt)", "+.2f")]),
        f"\n({r['seconds']:.0f} s)",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    r = run()
    emit(r, args.json, render(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
