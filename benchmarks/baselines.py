"""Baselines: for every sample model, params, size, latency at batch 1 and 32 (1 thread), accuracy and FLOPs.

    python -m benchmarks.baselines [--json]
"""

from __future__ import annotations

import sample_models
from compression_core import latency, measure

from .common import emit, environment, parser, progress, table


def run() -> dict:
    rows = []
    for name in sample_models.MODEL_NAMES:
        progress(f"{name}: measuring")
        wl = sample_models.load(name)
        s = measure(wl.model, wl, name=name, batch_size=1, threads=1, min_run_time=0.5)
        b32 = latency(wl.model, wl.test.x[:32], threads=1, min_run_time=0.5)[0]
        rows.append({
            "model": name, "params": s.params, "size_bytes": s.size_bytes, "latency_ms_b1": s.latency_ms,
            "latency_ms_b32": b32, "accuracy": s.accuracy, "flops": s.flops,
        })
    return {"environment": environment(), "models": rows}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    result = run()
    text = table(result["models"], [
        ("model", "model", ""), ("params", "params", ","), ("size_bytes", "size (B)", ","),
        ("latency_ms_b1", "ms @b1", ".3f"), ("latency_ms_b32", "ms @b32", ".3f"),
        ("accuracy", "accuracy", ".4f"), ("flops", "FLOPs/sample", ","),
    ])
    emit(result, args.json, text + "\n(latency: median, 1 thread, torch.utils.benchmark)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
