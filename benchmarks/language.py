"""Language models compressed as people do it (issue 25): tiny-lm's perplexity under weight-only int4 / int3 by
round-to-nearest, GPTQ and AWQ, its int4 recipe's file and ONNX Runtime MatMulNBits latency; minilm-topics' int8
speed and int4 fidelity; the low-rank figures. Every section calls the benchmark that owns it.

    python -m benchmarks.language [--json] [--quick] [--only tiny-lm minilm lowrank] [--group 64] [--bits 4 3]

1 intra-op thread; every latency is a ratio to torch fp32 timed interleaved in the same run
(``compression_core.timing.compare_calls``). Sections:

- tiny-lm (``benchmarks.llm_quant.tiny_lm_rows``): fp32 test perplexity and next-token accuracy; int4 and int3,
  group 64, by RTN / GPTQ / AWQ (goals: int4 GPTQ or AWQ within +5 % of fp32 perplexity and below RTN's; int3
  GPTQ/AWQ's perplexity increase at most half of RTN's). ``recipes/tiny-lm-int4-gptq.yaml`` (int8 embeddings +
  int4 GPTQ) applied as the CLI does: its file size ratio (goal <= 0.30x). The same int4 GPTQ codes as ONNX Runtime
  ``MatMulNBits`` (``engine: onnxruntime``), timed against torch fp32 at batch 1 (goal <= 1.0x) and 32.
- minilm-topics (``benchmarks.llm_quant.minilm_rows``): int4 RTN / GPTQ / AWQ fidelity (goal: GPTQ and AWQ above
  RTN) and torch dynamic int8 through the library at batch 32 beside this CPU's features (goal: fastest <= 0.30x
  within 1 point where the CPU has VNNI).
- low rank (``benchmarks.lowrank``): mnist-lenet300 at half the parameters fine-tuned, digits-cnn Tucker-2,
  minilm-topics FFN at rank 50 %.

``--quick``: 1 seed and fewer timing rounds (a smoke run, same rows). Progress goes to stderr.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from compression_core import inputs as I
from compression_core.cpu import cpu_facts
from compression_core.extra_metrics import compute
from compression_core.measure import size_bytes
from compression_core.recipe import apply_recipe, load_recipe
from compression_core.timing import compare_calls, model_call
from compression_core.workload import resolve_workload, workload_names

from . import llm_quant, lowrank
from .common import emit, environment, parser, progress, table

LM = "tiny-lm"
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny-lm-int4-gptq.yaml"
SECTIONS = ("tiny-lm", "minilm", "lowrank")
GOALS = {"int4_ppl_increase": 0.05, "int3_share_of_rtn": 0.5, "int4_size_ratio": 0.30, "ort_b1_ratio": 1.0,
         "minilm_int8_b32_ratio": 0.30, "minilm_int8_points": 1.0}


# ------------------------------------------------------------------------------------------------- tiny-lm
def tiny_lm_section(group: int, rounds: int, bits: tuple[int, ...] = (4, 3)) -> dict[str, Any]:
    from compression_core.quantize import WeightOnlyConfig

    quant = llm_quant.tiny_lm_rows(bits, group)
    if quant is None:
        raise SystemExit(f"benchmarks.language: no {LM!r} workload registered (is sample_models installed?)")
    wl = resolve_workload(LM)
    base = wl.model.eval()
    progress(f"{RECIPE.name}: applying as the CLI does")
    t = time.perf_counter()
    r = apply_recipe(load_recipe(RECIPE), with_latency=False)
    recipe = {"recipe": RECIPE.name, "size": r.after.size_bytes, "fp32_size": r.before.size_bytes,
              "size_ratio": r.after.size_bytes / r.before.size_bytes, "metric": wl.score(r.model),
              **compute(r.model, wl), "seconds": time.perf_counter() - t}
    progress("int4 gptq as ONNX Runtime MatMulNBits")
    ort, secs, _ = llm_quant._apply(base, WeightOnlyConfig(bits=4, method="gptq", group_size=group,
                                                           engine="onnxruntime"), wl)
    lat = {}
    with torch.no_grad():
        for b in (1, 32):
            x = I.head(wl.test.x, b)
            lat[b] = compare_calls(model_call(base, x), model_call(ort, x), rounds=rounds, runtime="onnxruntime",
                                   batch_size=b)
    ort_row = {"row": "int4 gptq MatMulNBits", "size": size_bytes(ort),
               "size_ratio": size_bytes(ort) / size_bytes(base),
               "metric": wl.score(ort), **compute(ort, wl), "seconds": secs,
               "b1_ratio": lat[1].ratio, "b1_ms": lat[1].after_ms, "fp32_b1_ms": lat[1].before_ms,
               "b32_ratio": lat[32].ratio, "b32_ms": lat[32].after_ms, "fp32_b32_ms": lat[32].before_ms}
    return {"workload": LM, "test_windows": len(wl.test), "params": sum(p.numel() for p in base.parameters()),
            **quant, "recipe": recipe, "onnxruntime": ort_row}


def tiny_lm_goals(lm: dict[str, Any]) -> list[dict[str, Any]]:
    by = {r["row"]: r for r in lm["rows"]}
    fp32 = by["fp32"]["metric"]
    out = []

    def up(row: str) -> float:
        return by[row]["metric"] / fp32 - 1  # relative perplexity increase

    if "int4 rtn" in by:
        best4 = min(("int4 gptq", "int4 awq"), key=up)
        out.append({"goal": "tiny-lm int4 g64: GPTQ or AWQ perplexity within +5 % of fp32 and below RTN's",
                    "met": up(best4) <= GOALS["int4_ppl_increase"] and up(best4) < up("int4 rtn"),
                    "measured": f"fp32 {fp32:.3f}; RTN {by['int4 rtn']['metric']:.3f} ({100 * up('int4 rtn'):+.1f} %), "
                                f"GPTQ {by['int4 gptq']['metric']:.3f} ({100 * up('int4 gptq'):+.1f} %), "
                                f"AWQ {by['int4 awq']['metric']:.3f} ({100 * up('int4 awq'):+.1f} %)"})
    if "int3 rtn" in by:
        best3 = min(("int3 gptq", "int3 awq"), key=up)
        share = up(best3) / up("int3 rtn") if up("int3 rtn") > 0 else float("inf")
        out.append({"goal": "tiny-lm int3 g64: GPTQ/AWQ perplexity increase <= half of RTN's",
                    "met": share <= GOALS["int3_share_of_rtn"],
                    "measured": f"RTN {100 * up('int3 rtn'):+.1f} %, GPTQ {100 * up('int3 gptq'):+.1f} %, "
                                f"AWQ {100 * up('int3 awq'):+.1f} %: the best is {share:.2f} of RTN's increase"})
    rc = lm["recipe"]
    out.append({"goal": "tiny-lm int4 recipe (int8 embeddings + int4 GPTQ) file <= 0.30x fp32",
                "met": rc["size_ratio"] <= GOALS["int4_size_ratio"],
                "measured": f"{rc['recipe']}: {rc['size']:,} of {rc['fp32_size']:,} bytes = {rc['size_ratio']:.3f}x, "
                            f"perplexity {rc['metric']:.3f} ({100 * (rc['metric'] / fp32 - 1):+.1f} %)"})
    o = lm["onnxruntime"]
    out.append({"goal": "tiny-lm int4 as ORT MatMulNBits: latency <= 1.0x torch fp32 at batch 1",
                "met": o["b1_ratio"] <= GOALS["ort_b1_ratio"],
                "measured": f"b1 {o['b1_ratio']:.2f}x ({o['b1_ms']:.2f} vs {o['fp32_b1_ms']:.2f} ms), b32 "
                            f"{o['b32_ratio']:.2f}x ({o['b32_ms']:.1f} vs {o['fp32_b32_ms']:.1f} ms)"})
    return out


# -------------------------------------------------------------------------------------------------- minilm
def minilm_goals(m: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    rows = {r["row"]: r for r in m["rows"]}
    if all(f"int4 {k}" in rows for k in ("rtn", "gptq", "awq")):
        f = {k: rows[f"int4 {k}"]["fidelity"] for k in ("rtn", "gptq", "awq")}
        out.append({"goal": "minilm-topics int4 g64: GPTQ and AWQ fidelity above RTN's at the same size",
                    "met": f["gptq"] > f["rtn"] and f["awq"] > f["rtn"],
                    "measured": f"fidelity RTN {f['rtn']:.4f}, GPTQ {f['gptq']:.4f}, AWQ {f['awq']:.4f}"})
    i8 = m.get("int8")
    if i8:
        within = [r for r in i8["rows"] if r["points"] <= GOALS["minilm_int8_points"]]
        fastest = min(i8["rows"], key=lambda r: r["b32_ratio"])
        best = min(within, key=lambda r: r["b32_ratio"]) if within else fastest
        text = (f"{best['row']}: {best['b32_ratio']:.3f}x ({best['b32_ms']:.1f} vs {best['fp32_b32_ms']:.1f} ms), "
                f"{-best['points']:+.2f} points")
        if fastest is not best:
            text += (f"; the fastest, {fastest['row']}, {fastest['b32_ratio']:.3f}x at {-fastest['points']:+.2f} "
                     "points")
        out.append({"goal": "minilm-topics fastest int8 through the library within 1 point <= 0.30x torch fp32 at "
                            "batch 32 (where the CPU has VNNI)",
                    "met": bool(within) and best["b32_ratio"] <= GOALS["minilm_int8_b32_ratio"],
                    "measured": text + f"; CPU int8 dot-product: {i8['int8_dot']}"})
    return out


# ----------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed, fewer timing rounds (a smoke run, same rows)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    p.add_argument("--group", type=int, default=64, choices=[32, 64, 128], help="weight-only group size")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3], choices=[4, 3], help="tiny-lm bit widths")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rounds, seeds = (5, 1) if args.quick else (15, 3)
    t0 = time.perf_counter()
    facts = cpu_facts()
    result: dict[str, Any] = {"benchmark": "language", "environment": environment(), "cpu": facts.summary(),
                              "int8_dot": facts.int8_dot, "threads": 1, "group_size": args.group, "goals": []}
    text = [f"CPU: {result['cpu']}; 1 thread; latency as ratios to torch fp32 timed interleaved in this run"]
    if "tiny-lm" in args.only:
        if LM not in workload_names():
            raise SystemExit(f"benchmarks.language: no {LM!r} workload registered")
        lm = result["tiny_lm"] = tiny_lm_section(args.group, rounds, tuple(args.bits))
        result["goals"] += tiny_lm_goals(lm)
        key = "token accuracy" if "token accuracy" in lm["rows"][0] else None
        cols = [("row", "tiny-lm", "s"), ("size", "bytes", ",d"), ("size_ratio", "x fp32", ".3f"),
                ("metric", lm["metric"], ".3f")] + ([(key, "next-token acc", ".4f")] if key else []) + [
                ("layer_error", "layer err", ".4f"), ("seconds", "s", ".1f")]
        rc, o = lm["recipe"], lm["onnxruntime"]
        text += ["", f"tiny-lm ({lm['params']:,} parameters, {lm['test_windows']} test windows of 64 tokens), "
                     f"weight-only, group {args.group}; {lm['metric']}: lower is better",
                 table(lm["rows"] + [dict(rc, row=f"recipe {rc['recipe']}"), o], cols)]
    if "minilm" in args.only:
        m = result["minilm"] = llm_quant.minilm_rows((4,), args.group, with_ort=False, with_int8=True)
        result["goals"] += minilm_goals(m)
        text += ["", f"minilm-topics, weight-only int4, group {args.group}",
                 table(m["rows"], [("row", "method", "s"), ("size_ratio", "x fp32", ".3f"),
                                   ("accuracy", "accuracy", ".4f"), ("fidelity", "fidelity", ".4f"),
                                   ("layer_error", "layer err", ".4f")])]
        text += [f"minilm-topics torch dynamic int8 at batch 32 (CPU int8 dot-product: {m['int8']['int8_dot']})",
                 table(m["int8"]["rows"], [("row", "int8", "s"), ("b32_ratio", "x fp32", ".3f"),
                                           ("b32_ms", "ms", ".1f"), ("accuracy", "accuracy", ".4f"),
                                           ("points", "points lost", ".2f"), ("fidelity", "fidelity", ".4f")])]
    if "lowrank" in args.only:
        lenet = lowrank.lenet_rows(seeds, rounds)
        cnn = lowrank.cnn_rows(seeds, rounds)
        lm_rank = lowrank.minilm_rows(max(5, rounds // 2))
        result["lowrank"] = {"lenet300": lenet, "digits_cnn": cnn, "minilm": lm_rank, "seeds": seeds}
        result["goals"] += lowrank.goals(lenet, cnn)
        text += ["", "low rank: mnist-lenet300", table(lenet["rows"], lowrank.COLS),
                 "low rank: digits-cnn", table(cnn["rows"], lowrank.CNN_COLS),
                 "low rank: minilm-topics (no training)", table(lm_rank["rows"], lowrank.LM_COLS)]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    verdicts = {True: "met", False: "NOT met", None: "within noise"}
    text += ["", "goals:"] + [f"  [{verdicts[g['met']]}] {g['goal']}: {g['measured']}" for g in result["goals"]]
    emit(result, args.json, "\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
