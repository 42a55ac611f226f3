"""Computed, not measured: the time of one ``compression_core.cost.estimate_cost`` against applying the same
configuration and measuring its artefact, and how far apart their numbers are.

    python -m benchmarks.cost [--model REF ...] [--moves N] [--json]

For each model, N configurations not seen before (seeded: unstructured, structured + shrink, dynamic int8, int4,
fp16, and prune-then-quantize, amounts and group sizes drawn at random) are each estimated and then applied
(``apply_step``) and measured as ``measure`` does it for sizes: ``size_bytes``, the sparse file when a weight is
zero, ``layer_stats`` and ``flops`` (no evaluation, no latency). The first estimate of a model also traces it
(graph, FLOPs per layer: once per model, cached) and is reported apart. One thread, like every timing here.
"""

from __future__ import annotations

import random
import statistics
import time

import torch

from compression_core import (
    CompressionError, DynamicInt8Config, HalfPrecisionConfig, Int4Config, ShrinkConfig, StructuredPruneConfig,
    UnstructuredPruneConfig, resolve_workload,
)
from compression_core import inputs as I
from compression_core.cost import estimate_cost
from compression_core.measure import flops, layer_stats, size_bytes
from compression_core.sparse import sparse_size_bytes
from compression_core.technique import StepContext, apply_step

from .common import emit, environment, parser, progress, table

MODELS = ("digits-cnn", "mnist-lenet300", "digits-vit", "minilm-topics")
FIELDS = ("size_bytes", "sparse_size_bytes", "params", "nonzero_params", "flops")


def configurations(rng: random.Random, n: int, unit: str) -> list[list]:
    """``n`` distinct configurations, cycling through the families with random settings."""
    def u():
        return UnstructuredPruneConfig(amount=round(rng.uniform(0.1, 0.95), 3))

    def s():
        return [StructuredPruneConfig(unit=unit, amount=round(rng.uniform(0.1, 0.7), 3)), ShrinkConfig()]

    def i4():
        return Int4Config(group_size=rng.choice([32, 64, 128, None]))

    def dyn():
        return DynamicInt8Config(include_classifier=rng.random() < 0.5)

    families = [lambda: [u()], lambda: s(), lambda: [dyn()], lambda: [i4()],
                lambda: [HalfPrecisionConfig(dtype=rng.choice(["fp16", "bf16"]))], lambda: [u(), dyn()],
                lambda: [u(), i4()], lambda: s() + [dyn()]]
    out, seen = [], set()
    for attempt in range(50 * n):  # a family with few settings is skipped once they are all seen
        steps = families[attempt % len(families)]()
        if repr(steps) not in seen:
            seen.add(repr(steps))
            out.append(steps)
        if len(out) == n:
            break
    return out


def measured(wl, steps) -> dict:
    model = wl.model
    for cfg in steps:
        model = apply_step(model, cfg, StepContext(data=wl, seed=0))
    rows = layer_stats(model)
    params, nonzero = sum(r.params for r in rows), sum(r.nonzero for r in rows)
    try:
        sparse = sparse_size_bytes(model) if nonzero < params else None
    except CompressionError:
        sparse = None
    return {"size_bytes": size_bytes(model), "sparse_size_bytes": sparse, "params": params,
            "nonzero_params": nonzero, "flops": flops(model, I.take(wl.test.x, slice(0, 1)))[0]}


def load(ref: str):
    if ref.startswith("zoo:"):
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import zoo

        return zoo.ZOO[ref[4:]]()
    return resolve_workload(ref)


def run_model(ref: str, moves: int) -> dict:
    progress(f"{ref}: loading")
    wl = load(ref)
    unit = "channels" if any(isinstance(m, torch.nn.Conv2d) for m in wl.model.modules()) else "neurons"
    t0 = time.perf_counter()  # the first estimate traces the model (graph, FLOPs per layer), once
    first = estimate_cost(wl.model, [StructuredPruneConfig(unit=unit, amount=0.5), ShrinkConfig()], wl)
    first_s = time.perf_counter() - t0
    est_ms, apply_s, rel = [], [], {f: 0.0 for f in FIELDS}
    exact = compared = unknown = 0
    for i, steps in enumerate(configurations(random.Random(0), moves, unit)):
        t0 = time.perf_counter()
        cost = estimate_cost(wl.model, steps, wl)
        est_ms.append((time.perf_counter() - t0) * 1e3)
        if cost.refused:
            progress(f"{ref}: move {i + 1}/{moves} refused by the library: {cost.refused[:80]}")
            continue
        t0 = time.perf_counter()
        real = measured(wl, steps)
        apply_s.append(time.perf_counter() - t0)
        progress(f"{ref}: move {i + 1}/{moves} {'+'.join(c.kind for c in steps)}: {est_ms[-1]:.0f} ms vs "
                 f"{apply_s[-1]:.2f} s")
        same = True
        for f in FIELDS:
            got, want = getattr(cost, f), real[f]
            if got is None or want is None:
                unknown += got is None and want is not None
                same &= got == want or got is None
                continue
            rel[f] = max(rel[f], abs(got - want) / max(want, 1))
            same &= got == want
        compared += 1
        exact += same
    return {"model": ref, "params": estimate_cost(wl.model, [], wl).params, "first_estimate_s": first_s,
            "estimate_ms_median": statistics.median(est_ms), "estimate_ms_max": max(est_ms),
            "apply_measure_s_median": statistics.median(apply_s) if apply_s else None,
            "speedup": statistics.median(apply_s) * 1e3 / statistics.median(est_ms) if apply_s else None,
            "configurations": compared, "exact": exact, "fields_unknown": unknown,
            **{f"max_rel_error_{f}": rel[f] for f in FIELDS}}


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="workload reference (repeatable); default: " + ", ".join(MODELS))
    p.add_argument("--moves", type=int, default=8, help="configurations per model (default 8)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [run_model(ref, args.moves) for ref in (args.model or MODELS)]
    result = {"environment": environment(), "models": rows}
    columns = [("model", "model", "s"), ("params", "params", ",d"), ("first_estimate_s", "first (trace) s", ".2f"),
               ("estimate_ms_median", "estimate ms", ".1f"), ("estimate_ms_max", "max ms", ".1f"),
               ("apply_measure_s_median", "apply+measure s", ".2f"), ("speedup", "x faster", ".0f"),
               ("exact", "exact", "d"), ("configurations", "of", "d"),
               ("max_rel_error_size_bytes", "size err", ".1e"),
               ("max_rel_error_sparse_size_bytes", "sparse err", ".1e"),
               ("max_rel_error_params", "params err", ".1e"), ("max_rel_error_flops", "flops err", ".1e")]
    emit(result, args.json, table(rows, columns))


if __name__ == "__main__":
    main()
