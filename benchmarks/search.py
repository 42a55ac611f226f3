"""Recipe search: the front against uniform sparsity and fit_budget, Ray scaling, time to the first front point.

    python -m benchmarks.search [--json] [--trials N] [--no-ray]

1. On mnist-lenet300 and digits-cnn, a ``compression_core.search`` of N trials (default 100, seed 0, local
   executor). The uniform-sparsity curve is uniform magnitude pruning (every layer but the classifier) at 0 .. 95 %
   in 2.5 % steps; at each size level 0.5x, 0.4x, 0.3x, 0.2x, 0.1x of the dense file its point is the most accurate
   uniform setting whose file fits the level. The front must have a point at least as small with a HIGHER test
   metric at every level, and beat ``fit_budget`` (fitted to the level's byte budget, pruning, calibration curves)
   at >= 1 level. Sizes: ``shipped_size`` (sparse-encoded file when smaller than the dense one, as fit_budget counts).
2. Time to the first front point (the workload already built, as the dashboard has it cached) and in total.
3. Ray scaling: the same search (48 trials, batch 8) and a sensitivity sweep (digits-cnn, quantize 8..2 bits and
   prune on the 2.5 % grid, per-layer tasks) on a local Ray runtime with K = 1 and K = 2 worker CPUs: startup, the
   first task's worker warm-up (imports + workload build), then the timed work; fronts compared with the local one.
   The machine is shared (2 cores, other jobs): ratios are from one run, read them as such.
Progress on stderr.
"""

from __future__ import annotations

import sys
import time

import torch

from .common import emit, environment, parser, table

MODELS = ("mnist-lenet300", "digits-cnn")
LEVELS = (0.5, 0.4, 0.3, 0.2, 0.1)
UNIFORM_GRID = tuple(round(i * 0.025, 3) for i in range(39))


def _log(msg: str) -> None:
    sys.stderr.write(f"[benchmarks.search] {msg}\n")
    sys.stderr.flush()


def _best_under(points: list[tuple[int, float]], size: int) -> tuple[int, float] | None:
    """The most accurate (size, acc) point with size <= ``size`` (smallest size on ties)."""
    fits = [p for p in points if p[0] <= size]
    return max(fits, key=lambda p: (p[1], -p[0])) if fits else None


def uniform_curve(ref: str) -> list[tuple[float, int, float]]:
    from compression_core.search import evaluate_recipe, make_recipe

    out = []
    for s in UNIFORM_GRID:
        steps = [{"kind": "prune_unstructured", "amount": s}] if s > 0 else []
        r = evaluate_recipe(ref, {"recipe": make_recipe(ref, steps)})
        out.append((s, r["size_bytes"], r["accuracy"]))
    return out


def fit_point(ref: str, budget: int, curves) -> tuple[int, float] | None:
    from compression_core import CompressionError
    from compression_core.budget import fit_budget
    from compression_core.search import evaluate_recipe, make_recipe
    from compression_core.workload import resolve_workload

    wl = resolve_workload(ref)
    try:
        fit = fit_budget(wl.model, wl, {"max_size_bytes": int(budget)}, curves=curves)
    except CompressionError:
        return None
    step = fit.step()
    r = evaluate_recipe(ref, {"recipe": make_recipe(ref, [step.model_dump(mode="json")])})
    return r["size_bytes"], r["accuracy"]


def front_vs_baselines(ref: str, trials: int) -> tuple[dict, list[dict]]:
    from compression_core.search import SPARSITY_LEVELS, search
    from compression_core.sensitivity import sensitivity
    from compression_core.workload import resolve_workload

    wl = resolve_workload(ref)  # built before timing, as the dashboard has it cached
    t0 = time.perf_counter()
    res = search(ref, trials=trials, seed=0, progress=lambda f, m: _log(f"{ref}: {m}") if f >= 1 or
                 int(f * trials) % 10 == 0 else None)
    seconds = time.perf_counter() - t0
    base = res.baseline["size_bytes"]
    front = [(p.size_bytes, p.accuracy) for p in res.front]
    _log(f"{ref}: uniform curve and fits")
    uni = uniform_curve(ref)
    curves = sensitivity(wl.model, wl, "prune", levels=SPARSITY_LEVELS, heads=False)
    rows = []
    for level in LEVELS:
        u = _best_under([(s, a) for _, s, a in uni], int(level * base))
        f = fit_point(ref, int(level * base), curves)
        fu = _best_under(front, u[0]) if u else None
        ff = _best_under(front, f[0]) if f else None
        rows.append({
            "model": ref, "level": level, "budget_bytes": int(level * base),
            "uniform_bytes": u[0] if u else None, "uniform_acc": u[1] if u else None,
            "front_bytes_vs_uniform": fu[0] if fu else None, "front_acc_vs_uniform": fu[1] if fu else None,
            "beats_uniform": bool(u and fu and fu[1] > u[1]),
            "fit_bytes": f[0] if f else None, "fit_acc": f[1] if f else None,
            "front_acc_vs_fit": ff[1] if ff else None, "beats_fit": bool(f and ff and ff[1] > f[1]),
        })
    within = [p for p in res.front if p.size_ratio <= 0.15 and (res.baseline["accuracy"] - p.accuracy) * 100 <= 1.0]
    summary = {"model": ref, "trials": res.trials, "failed": res.failed, "seconds": seconds,
               "first_point_seconds": res.first_point_seconds, "baseline_acc": res.baseline["accuracy"],
               "baseline_bytes": base, "front_points": len(res.front),
               "beats_uniform_all": all(r["beats_uniform"] for r in rows),
               "beats_fit_levels": sum(r["beats_fit"] for r in rows),
               "best_at_0.15x": max((p.accuracy for p in res.front if p.size_ratio <= 0.15), default=None),
               "point_0.15x_within_1pt": bool(within),
               "front": [{"bytes": p.size_bytes, "ratio": p.size_ratio, "acc": p.accuracy, "method": p.settings["method"],
                          "origin": p.origin} for p in res.front]}
    return summary, rows


def ray_scaling(trials: int = 48) -> list[dict]:
    from compression_core.executors import RayExecutor, sweep_on
    from compression_core.search import SPARSITY_LEVELS, search

    local = search("mnist-lenet300", trials=trials, seed=0)
    key = [(p.accuracy, p.size_bytes, p.recipe == p.recipe) for p in local.front]
    rows = []
    for k in (1, 2):
        _log(f"ray K={k}: starting a local runtime")
        t0 = time.perf_counter()
        ex = RayExecutor(workers=k)
        startup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            for ref in ("mnist-lenet300", "digits-cnn"):
                ex.warm_up(ref)
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = search("mnist-lenet300", trials=trials, seed=0, executor="ray")  # reuses the runtime
            search_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            sweep_on(ex, "digits-cnn", "quantize", include_classifier=True, heads=False)
            sweep_on(ex, "digits-cnn", "prune", levels=SPARSITY_LEVELS, include_classifier=True, heads=False)
            sweep_s = time.perf_counter() - t0
        finally:
            ex.close()
        same = [(p.accuracy, p.size_bytes, True) for p in res.front] == key and \
            [p.recipe for p in res.front] == [p.recipe for p in local.front]
        rows.append({"workers": k, "startup_s": startup, "warm_up_s": warm, "search_s": search_s,
                     "sweep_s": sweep_s, "same_front_as_local": same})
        _log(f"ray K={k}: search {search_s:.1f} s, sweep {sweep_s:.1f} s, same front as local: {same}")
    for r in rows:
        r["search_speedup"] = rows[0]["search_s"] / r["search_s"]
        r["sweep_speedup"] = rows[0]["sweep_s"] / r["sweep_s"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100, help="trials per model (default 100)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray scaling part")
    args = p.parse_args(argv)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summaries, rows = [], []
        for m in MODELS:
            s, r = front_vs_baselines(m, args.trials)
            summaries.append(s)
            rows += r
        scaling = [] if args.no_ray else ray_scaling()
    finally:
        torch.set_num_threads(old)
    result = {"environment": environment(), "trials": args.trials, "models": summaries, "levels": rows,
              "ray_scaling": scaling, "note": "shared 2-core machine, 1 thread per trial; accuracies on the test "
                                              "split (which also selects the front: optimistic by the selection)"}
    parts = [
        "Search summary (seed 0, local executor; first point: workload already built)",
        table(summaries, [("model", "model", "s"), ("trials", "trials", "d"), ("seconds", "s", ".1f"),
                          ("first_point_seconds", "first pt s", ".2f"), ("baseline_acc", "base acc", ".4f"),
                          ("baseline_bytes", "base B", ",d"), ("front_points", "front", "d"),
                          ("best_at_0.15x", "best<=0.15x", ".4f"), ("point_0.15x_within_1pt", "<=0.15x,<=1pt", ""),
                          ("beats_uniform_all", "beats uniform", ""), ("beats_fit_levels", "beats fit", "d")]),
        "Per size level: most accurate uniform / fit_budget point within the level vs the best front point no larger",
        table(rows, [("model", "model", "s"), ("level", "level", ".1f"), ("budget_bytes", "budget B", ",d"),
                     ("uniform_bytes", "uniform B", ",d"), ("uniform_acc", "uniform acc", ".4f"),
                     ("front_acc_vs_uniform", "front acc", ".4f"), ("beats_uniform", "beats", ""),
                     ("fit_bytes", "fit B", ",d"), ("fit_acc", "fit acc", ".4f"),
                     ("front_acc_vs_fit", "front acc", ".4f"), ("beats_fit", "beats fit", "")]),
    ]
    if scaling:
        parts += ["Ray, local runtime on 127.0.0.1, K worker CPUs (search: lenet300 48 trials batch 8; sweep: digits-cnn "
                  "quantize + prune 2.5 % grid)",
                  table(scaling, [("workers", "K", "d"), ("startup_s", "startup s", ".1f"),
                                  ("warm_up_s", "warm-up s", ".1f"), ("search_s", "search s", ".1f"),
                                  ("search_speedup", "speedup", ".2f"), ("sweep_s", "sweep s", ".1f"),
                                  ("sweep_speedup", "speedup", ".2f"), ("same_front_as_local", "same front", "")])]
    parts.append("Machine shared with other engineers' jobs: timings are noisy.")
    emit(result, args.json, "\n\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
