"""Runtimes: every sample model as fp32 and int8 in torch and in ONNX Runtime: size, accuracy, latency b1/b32.

    python -m benchmarks.runtimes [--json] [--models NAME ...] [--rounds N] [--min-run-time S]

torch int8: dynamic and static (graph mode, compression_core.quantize); ONNX Runtime int8: dynamic, static QDQ
(compression_core.ort, calibrated on the calibration split) and the torch static model deployed as QDQ with its own
ranges (``deploy_onnx``). Latency: median, 1 thread, batch 1 and 32, timed round-robin so every path sees the same
load; ratios are against fp32 in the same runtime ("speed") and against the torch fp32 model ("vs torch"), measured
in this run. Per model it says which int8 path is fastest at batch 32 and whether it is at least as fast as the
torch fp32 model (the goal). Progress goes to stderr.
"""

from __future__ import annotations

import sys

import torch

import sample_models
from compression_core.cpu import cpu_summary
from compression_core.ort import fastest_int8, runtime_comparison

from .common import emit, environment, parser, table


def say(msg: str) -> None:
    print(f"[runtimes] {msg}", file=sys.stderr, flush=True)


def run(models: list[str] | None = None, rounds: int = 3, min_run_time: float = 0.1) -> dict:
    torch.set_num_threads(1)
    out = []
    for name in models or sample_models.MODEL_NAMES:
        rows = runtime_comparison(name, min_run_time=min_run_time, rounds=rounds, progress=say)
        out.append({"model": name, "rows": rows, "fastest_int8": fastest_int8(rows)})
    env = environment() | {"cpu": cpu_summary(), "onnxruntime_threads": 1, "rounds": rounds}
    return {"environment": env, "models": out}


def _summary(m: dict) -> str:
    f = m["fastest_int8"]
    parts = [f"{m['model']}: fastest int8 at batch 32 = {f['runtime']} {f['path']} ({f['ms_b32']:.3f} ms, "
             f"{f['speedup_b32']:.2f}x its fp32)"]
    for rt, b in f["per_runtime"].items():
        verdict = "yes" if b["at_least_fp32_speed"] else "NO"
        parts.append(f"{rt}: best {b['path']} {b['speedup_b32']:.2f}x fp32 -> at least as fast: {verdict}")
    parts.append(f"goal (fastest int8 offered >= torch fp32 speed, batch 32: {f['vs_torch_fp32_b32']:.2f}x) met: "
                 f"{'yes' if f['goal_met_vs_torch_fp32'] else 'NO'}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sample_models.MODEL_NAMES, help="default: all sample models")
    p.add_argument("--rounds", type=int, default=3, help="round-robin timing rounds (default 3)")
    p.add_argument("--min-run-time", type=float, default=0.1, help="seconds per timing (default 0.1)")
    args = p.parse_args(argv)
    result = run(args.models, rounds=args.rounds, min_run_time=args.min_run_time)
    cols = [("model", "model", ""), ("runtime", "runtime", ""), ("path", "path", ""), ("size_bytes", "size (B)", ","),
            ("size_ratio", "size x", ".2f"), ("accuracy", "accuracy", ".4f"), ("agreement", "agree", ".4f"),
            ("ms_b1", "ms @b1", ".4f"), ("ms_b32", "ms @b32", ".4f"), ("speedup_b1", "speed @b1", ".2f"),
            ("speedup_b32", "speed @b32", ".2f"), ("vs_torch_fp32_b32", "vs torch @b32", ".2f")]
    rows = [r | {"model": m["model"]} for m in result["models"] for r in m["rows"]]
    text = "\n".join([
        table(rows, cols),
        "(size x / speed: vs fp32 in the same runtime, this run; vs torch: vs the torch fp32 model; agree: argmax "
        "agreement with torch fp32 on the test split; latency: median of round-robin medians, 1 thread; the "
        "machine's cores are shared with other work, so compare ratios, not absolute times)",
        f"CPU: {result['environment']['cpu']}",
        "",
        *(_summary(m) for m in result["models"]),
    ])
    emit(result, args.json, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
