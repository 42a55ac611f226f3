"""The LLM quantization methods on a real transformer: weight-only int8 / int4 / int3 by round-to-nearest, GPTQ and
AWQ (``WeightOnlyConfig``) on minilm-topics, and on tiny-lm (perplexity) where that workload is registered.

    python -m benchmarks.llm_quant [--json] [--bits 4 3] [--group 64] [--no-ort] [--no-int8]

1 intra-op thread. minilm-topics is loaded once; every row quantizes the same float model with the same
calibration split (74 lines). Columns: file size (bytes of the saved state_dict, ratio to fp32), topic accuracy,
embedding fidelity (mean cosine of the sentence embeddings to the float encoder's, the workload's extra metric),
the mean relative layer output error the step reports, seconds to apply. The ONNX Runtime row ships the int4 GPTQ
codes as MatMulNBits and is timed against torch fp32 in the same run (interleaved, batch 1 and 32). The int8 row
(``--no-int8`` to skip) is item 4 of issue 25: torch dynamic int8 of the Linear layers with per-channel weights
and full-range activations, timed against fp32 at batch 32, beside this CPU's features. Progress goes to stderr.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any

import torch

from compression_core import inputs as I
from compression_core.cpu import cpu_facts
from compression_core.extra_metrics import compute
from compression_core.measure import size_bytes
from compression_core.technique import StepContext, apply_step
from compression_core.timing import compare_calls, model_call
from compression_core.workload import resolve_workload, workload_names

from .common import emit, environment, parser, progress, table

GOALS = {"gptq_awq_fidelity_above_rtn": True, "int8_b32_ratio": 0.30, "int8_accuracy_points": 1.0}


def _apply(model, cfg, wl) -> tuple[Any, float, list[str]]:
    ctx = StepContext(data=wl)
    t = time.perf_counter()
    out = apply_step(model, cfg, ctx)
    return out, time.perf_counter() - t, ctx.notes


def _layer_error(notes: list[str]) -> float | None:
    for n in notes:
        if "mean layer output error" in n:
            return float(n.split("mean layer output error ")[1].split()[0])
    return None


def minilm_rows(bits_list: tuple[int, ...], group: int, with_ort: bool, with_int8: bool) -> dict:
    from sample_models import minilm_topics as mt  # lazy: loading MiniLM takes seconds

    from compression_core.quantize import EmbeddingInt8Config, WeightOnlyConfig

    progress("loading minilm-topics")
    wl = resolve_workload("minilm-topics")
    base = wl.model.eval()
    fp32_size = size_bytes(base)
    fp32_acc = wl.score(base)
    rows = [{"model": "minilm-topics", "row": "fp32", "bits": 32, "method": "-", "size": fp32_size, "size_ratio": 1.0,
             "accuracy": fp32_acc, "fidelity": 1.0, "layer_error": 0.0, "seconds": 0.0}]
    models: dict[tuple[int, str], Any] = {}
    for bits in bits_list:
        for method in ("rtn", "gptq", "awq"):
            progress(f"int{bits} {method} group {group}")
            cfg = WeightOnlyConfig(bits=bits, method=method, group_size=group)
            q, secs, notes = _apply(base, cfg, wl)
            models[(bits, method)] = q
            rows.append({"model": "minilm-topics", "row": f"int{bits} {method}", "bits": bits, "method": method,
                         "size": size_bytes(q), "size_ratio": size_bytes(q) / fp32_size, "accuracy": wl.score(q),
                         "fidelity": mt.fidelity(q, wl), "layer_error": _layer_error(notes), "seconds": secs})
    if 4 in bits_list:
        progress("int8 embeddings + int4 gptq")
        emb, s1, _ = _apply(base, EmbeddingInt8Config(), wl)
        q, s2, notes = _apply(emb, WeightOnlyConfig(bits=4, method="gptq", group_size=group), wl)
        rows.append({"model": "minilm-topics", "row": "int8 emb. + int4 gptq", "bits": 4, "method": "gptq+emb",
                     "size": size_bytes(q), "size_ratio": size_bytes(q) / fp32_size, "accuracy": wl.score(q),
                     "fidelity": mt.fidelity(q, wl), "layer_error": _layer_error(notes), "seconds": s1 + s2})
    verdicts = {}
    for bits in bits_list:
        by = {r["method"]: r for r in rows if r["bits"] == bits and r["method"] in ("rtn", "gptq", "awq")}
        verdicts[f"int{bits}"] = {m: by[m]["fidelity"] > by["rtn"]["fidelity"] for m in ("gptq", "awq")}
    out: dict[str, Any] = {"rows": rows, "fidelity_above_rtn": verdicts}
    example = {b: I.head(wl.test.x, b) for b in (1, 32)}
    if with_ort and 4 in bits_list:
        progress("int4 gptq as ONNX Runtime MatMulNBits (same codes)")
        cfg = WeightOnlyConfig(bits=4, method="gptq", group_size=group, engine="onnxruntime")
        ort, secs, _ = _apply(base, cfg, wl)
        torch_q = models[(4, "gptq")]
        with torch.no_grad():
            diff = float((I.predict(ort, wl.test.x) - I.predict(torch_q, wl.test.x)).abs().max())
        lat = {}
        with torch.no_grad():
            for b, x in example.items():
                c = compare_calls(model_call(base, x), model_call(ort, x), rounds=9, runtime="onnxruntime",
                                  batch_size=b)
                lat[b] = c
        out["onnxruntime"] = {"row": "int4 gptq MatMulNBits", "size": size_bytes(ort), "size_ratio": size_bytes(ort)
                              / fp32_size, "accuracy": wl.score(ort), "max_logit_diff_vs_torch_gptq": diff,
                              "seconds": secs, "b1_ratio": lat[1].ratio, "b32_ratio": lat[32].ratio,
                              "b1_ms": lat[1].after_ms, "b32_ms": lat[32].after_ms,
                              "fp32_b1_ms": lat[1].before_ms, "fp32_b32_ms": lat[32].before_ms}
    if with_int8:
        out["int8"] = int8_rows(base, wl, fp32_acc, example[32], lambda m: mt.fidelity(m, wl))
    return out


def int8_rows(base, wl, fp32_acc: float, x32, fidelity) -> dict:
    """Item 4: torch dynamic int8 of the Linear layers, the library's default and per-channel + full range (with
    and without SmoothQuant before it), each timed against fp32 at batch 32 in the same run."""
    from compression_core.quantize import DynamicInt8Config, SmoothQuantConfig

    facts = cpu_facts()
    res: dict[str, Any] = {"cpu": facts.summary(), "int8_dot": facts.int8_dot, "rows": []}
    variants = [("default (per-tensor, 7-bit act.)", {}),
                ("per-channel, activations auto", {"weights": "per_channel", "activations": "auto"})]
    variants.append(("SmoothQuant 0.5 + per-channel, auto", {"weights": "per_channel", "activations": "auto",
                                                              "smooth": 0.5}))
    for label, kw in variants:
        progress(f"dynamic int8 {label}")
        src, notes = base, []
        if "smooth" in kw:
            src, _, notes = _apply(base, SmoothQuantConfig(alpha=kw.pop("smooth")), wl)
        q, secs, more = _apply(src, DynamicInt8Config(**kw), wl)
        notes += more
        with torch.no_grad():
            c = compare_calls(model_call(base, x32), model_call(q, x32), rounds=15, batch_size=32)
        acc = wl.score(q)
        res["rows"].append({"row": f"dynamic int8 {label}", "b32_ratio": c.ratio, "b32_ms": c.after_ms,
                            "fp32_b32_ms": c.before_ms, "accuracy": acc, "points": 100 * (fp32_acc - acc),
                            "fidelity": fidelity(q),
                            "notes": notes})
    return res


def tiny_lm_rows(bits_list: tuple[int, ...], group: int) -> dict | None:
    """Perplexity of tiny-lm at each bit width and method, where a workload of that name is registered."""
    names = [n for n in workload_names() if n.startswith("tiny-lm")]
    if not names:
        return None
    from compression_core.quantize import WeightOnlyConfig

    progress(f"loading {names[0]}")
    wl = resolve_workload(names[0])
    base = wl.model.eval()
    fp32_size = size_bytes(base)
    rows = [{"model": names[0], "row": "fp32", "bits": 32, "method": "-", "size": fp32_size, "size_ratio": 1.0,
             "metric": wl.score(base), **compute(base, wl), "layer_error": 0.0, "seconds": 0.0}]
    for bits in bits_list:
        for method in ("rtn", "gptq", "awq"):
            progress(f"{names[0]} int{bits} {method}")
            q, secs, notes = _apply(base, WeightOnlyConfig(bits=bits, method=method, group_size=group), wl)
            rows.append({"model": names[0], "row": f"int{bits} {method}", "bits": bits, "method": method,
                         "size": size_bytes(q), "size_ratio": size_bytes(q) / fp32_size, "metric": wl.score(q),
                         **compute(q, wl), "layer_error": _layer_error(notes), "seconds": secs})
    return {"metric": wl.metric_name, "higher_is_better": wl.metric.higher_is_better, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3], choices=[3, 4, 8])
    p.add_argument("--group", type=int, default=64, choices=[16, 32, 64, 128, 256])
    p.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime MatMulNBits row")
    p.add_argument("--no-int8", action="store_true", help="skip the dynamic int8 latency rows (item 4)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bits = tuple(args.bits)
    result: dict[str, Any] = {"environment": environment(), "cpu": cpu_facts().summary(), "group_size": args.group,
                              "goals": GOALS}
    result["minilm"] = minilm_rows(bits, args.group, not args.no_ort, not args.no_int8)
    result["tiny_lm"] = tiny_lm_rows(bits, args.group)
    cols = [("row", "method", "s"), ("size", "bytes", ",d"), ("size_ratio", "x fp32", ".3f"),
            ("accuracy", "accuracy", ".4f"), ("fidelity", "fidelity", ".4f"), ("layer_error", "layer err", ".4f"),
            ("seconds", "s", ".1f")]
    text = [f"CPU: {result['cpu']}", "", f"minilm-topics, weight-only, group {args.group}",
            table(result["minilm"]["rows"], cols),
            f"GPTQ / AWQ fidelity above RTN's: {result['minilm']['fidelity_above_rtn']}"]
    o = result["minilm"].get("onnxruntime")
    if o:
        text.append(f"\n{o['row']}: {o['size']:,} bytes ({o['size_ratio']:.3f}x), accuracy {o['accuracy']:.4f}, "
                    f"max |logit - torch GPTQ| {o['max_logit_diff_vs_torch_gptq']:.2e}, latency vs torch fp32 "
                    f"b1 {o['b1_ratio']:.2f}x ({o['b1_ms']:.2f} ms), b32 {o['b32_ratio']:.2f}x ({o['b32_ms']:.1f} ms)")
    i8 = result["minilm"].get("int8")
    if i8:
        text.append(f"\nItem 4, torch dynamic int8 at batch 32 (CPU int8 dot-product: {i8['int8_dot']}):")
        text.append(table(i8["rows"], [("row", "int8", "s"), ("b32_ratio", "x fp32", ".3f"), ("b32_ms", "ms", ".1f"),
                                       ("accuracy", "accuracy", ".4f"), ("points", "points lost", ".2f"),
                                       ("fidelity", "fidelity", ".4f")]))
    if result["tiny_lm"]:
        text.append(f"\ntiny-lm ({result['tiny_lm']['metric']}):")
        text.append(table(result["tiny_lm"]["rows"], [("row", "method", "s"), ("size", "bytes", ",d"),
                                                      ("metric", "metric", ".3f"), ("layer_error", "layer err", ".4f")]))
    else:
        text.append("\ntiny-lm: not registered (workload_names() has no tiny-lm); no perplexity rows")
    emit(result, args.json, "\n".join(text))


if __name__ == "__main__":
    main(sys.argv[1:])
