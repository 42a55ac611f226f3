"""Recipe search: the front against uniform sparsity and fit_budget, Ray scaling, time to the first front point.

    python -m benchmarks.search [--json] [--trials N] [--no-ray]

1. On mnist-lenet300 and digits-cnn, a ``compression_core.search`` of N trials (default 100, seed 0, local
   executor). The uniform-sparsity curve is uniform magnitude pruning (every layer but the classifier) at 0 .. 95 %
   in 2.5 % steps; at each size level 0.5x, 0.4x, 0.3x, 0.2x, 0.1x of the dense file its point is the most accurate
   uniform setting whose file fits the level. The front must have a point at least as small with a HIGHER test
   metric at every level, and beat ``fit_budget`` (fitted to the level's byte budget, pruning, calibration curves)
   at >= 1 level. Sizes: ``shipped_size`` (sparse-encoded file when smaller than the dense one, as fit_budget counts).
2. Time to the first front point (the workload already built, as the dashboard has it cached) and in total.
3. minilm-topics (when registered; --minilm-trials, default 50): the front against the seeded uniform int8 / int4 /
   sparsity settings at equal or smaller file size.
4. Ray scaling: the lenet300 search (48 trials, batch 8), a sensitivity sweep (digits-cnn, quantize 8..2 bits and
   prune on the 2.5 % grid, per-layer tasks) and one batch of 4 minilm-topics trials on a local Ray runtime with
   K = 1 and K = 2 worker CPUs: startup, worker warm-up (imports + workload build), then the timed work; fronts
   compared with the local one.
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


def seeds_beaten(res) -> str:
    """How many seeded uniform settings (uniform sparsity, each storage method alone) the front strictly beats: a
    front point at least as small with a higher metric."""
    seeds = [p for p in res.points if p.origin in ("uniform", "method") and p.error is None]
    beaten = [s for s in seeds if any(f.size_bytes <= s.size_bytes and f.accuracy > s.accuracy for f in res.front)]
    return f"{len(beaten)}/{len(seeds)}"


def front_vs_baselines(ref: str, trials: int) -> tuple[dict, list[dict]]:
    from compression_core.search import SPARSITY_LEVELS, search
    from compression_core.sensitivity import sensitivity
    from compression_core.workload import resolve_workload

    wl = resolve_workload(ref)  # built before timing, as the dashboard has it cached
    cold = search(ref, trials=1, seed=0, seed_trials=False)  # a first search in this process also pays imports
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
        rows.append({  # None: the uniform curve (or the fit) does not reach this level, nothing to compare
            "model": ref, "level": level, "budget_bytes": int(level * base),
            "uniform_bytes": u[0] if u else None, "uniform_acc": u[1] if u else None,
            "front_bytes_vs_uniform": fu[0] if fu else None, "front_acc_vs_uniform": fu[1] if fu else None,
            "beats_uniform": bool(fu and fu[1] > u[1]) if u else None,
            "fit_bytes": f[0] if f else None, "fit_acc": f[1] if f else None,
            "front_acc_vs_fit": ff[1] if ff else None, "beats_fit": bool(ff and ff[1] > f[1]) if f else None,
        })
    within = [p for p in res.front if p.size_ratio <= 0.15 and (res.baseline["accuracy"] - p.accuracy) * 100 <= 1.0]
    summary = {"model": ref, "trials": res.trials, "failed": res.failed, "seconds": seconds,
               "first_point_seconds": res.first_point_seconds,
               "cold_first_point_seconds": cold.first_point_seconds, "baseline_acc": res.baseline["accuracy"],
               "baseline_bytes": base, "front_points": len(res.front),
               "uniform_min_ratio": min(sz for _, sz, _ in uni) / base,
               "uniform_levels": sum(r["beats_uniform"] is not None for r in rows),
               "beats_uniform_all": all(r["beats_uniform"] for r in rows if r["beats_uniform"] is not None),
               "beats_fit_levels": sum(bool(r["beats_fit"]) for r in rows),
               "seeds_beaten": seeds_beaten(res),
               "best_at_0.15x": max((p.accuracy for p in res.front if p.size_ratio <= 0.15), default=None),
               "point_0.15x_within_1pt": bool(within),
               "front": [{"bytes": p.size_bytes, "ratio": p.size_ratio, "acc": p.accuracy, "method": p.settings["method"],
                          "origin": p.origin} for p in res.front]}
    return summary, rows


def minilm(trials: int) -> dict | None:
    """minilm-topics (when registered): the front against the seeded uniform settings at equal or smaller size."""
    from compression_core.search import search
    from compression_core.workload import resolve_workload, workload_names

    ref = "minilm-topics"
    if ref not in workload_names():
        return None
    resolve_workload(ref)
    t0 = time.perf_counter()
    res = search(ref, trials=trials, seed=0, progress=lambda f, m: _log(f"{ref}: {m}"))
    seconds = time.perf_counter() - t0
    rows = []
    for p in res.points:
        if p.origin not in ("uniform", "method") or p.error is not None:
            continue
        best = _best_under([(f.size_bytes, f.accuracy) for f in res.front], p.size_bytes)
        st = p.settings
        sp = sorted(set(st["sparsity"].values()))
        rows.append({"setting": f"{st['method']}, sparsity {'/'.join(f'{v:.2f}' for v in sp)}, embedding "
                                f"{st.get('embedding', 'float')}", "bytes": p.size_bytes, "ratio": p.size_ratio,
                     "acc": p.accuracy, "front_acc": best[1] if best else None,
                     "front_bytes": best[0] if best else None, "beaten": bool(best and best[1] > p.accuracy)})
    return {"model": ref, "trials": res.trials, "failed": res.failed, "seconds": seconds,
            "first_point_seconds": res.first_point_seconds, "baseline_acc": res.baseline["accuracy"],
            "baseline_bytes": res.baseline["size_bytes"], "front_points": len(res.front),
            "seeds_beaten": seeds_beaten(res), "settings": rows,
            "front": [{"bytes": p.size_bytes, "ratio": p.size_ratio, "acc": p.accuracy,
                       "method": p.settings["method"], "embedding": p.settings.get("embedding"),
                       "origin": p.origin} for p in res.front]}


def _heavy_payloads(ref: str, n: int) -> list[dict]:
    from compression_core.search import build_space, make_recipe
    from compression_core.workload import resolve_workload

    space = build_space(resolve_workload(ref), methods=["none", "int8", "int4"])
    settings = [(0.3, "int8"), (0.5, "int8"), (0.3, "int4"), (0.5, "int4"), (0.7, "int8"), (0.7, "int4")][:n]
    return [{"recipe": make_recipe(ref, space.steps(space.params_for(s, m)))} for s, m in settings]


def ray_scaling(trials: int = 48, heavy: str | None = None, heavy_n: int = 4) -> list[dict]:
    """K = 1 and 2 local Ray workers: the lenet300 search (small tasks, ~50 ms), a digits-cnn sweep, and
    ``heavy_n`` trials of a heavy workload (minilm-topics: ~10 s each) submitted as one batch."""
    from compression_core.executors import RayExecutor, sweep_on
    from compression_core.search import SPARSITY_LEVELS, search

    local = search("mnist-lenet300", trials=trials, seed=0)
    payloads = _heavy_payloads(heavy, heavy_n) if heavy else []
    rows = []
    for k in (1, 2):
        _log(f"ray K={k}: starting a local runtime")
        t0 = time.perf_counter()
        ex = RayExecutor(workers=k)
        startup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            for ref in ("mnist-lenet300", "digits-cnn") + ((heavy,) if heavy else ()):
                ex.warm_up(ref)
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = search("mnist-lenet300", trials=trials, seed=0, executor="ray")  # reuses the runtime
            search_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            sweep_on(ex, "digits-cnn", "quantize", include_classifier=True, heads=False)
            sweep_on(ex, "digits-cnn", "prune", levels=SPARSITY_LEVELS, include_classifier=True, heads=False)
            sweep_s = time.perf_counter() - t0
            heavy_s = None
            if payloads:
                t0 = time.perf_counter()
                out = ex.run("trial", heavy, payloads)
                heavy_s = time.perf_counter() - t0
                assert all("error" not in r for r in out), out
        finally:
            ex.close()
        same = [(p.accuracy, p.size_bytes, p.recipe) for p in res.front] == \
            [(p.accuracy, p.size_bytes, p.recipe) for p in local.front]
        rows.append({"workers": k, "startup_s": startup, "warm_up_s": warm, "search_s": search_s,
                     "sweep_s": sweep_s, "heavy_s": heavy_s, "same_front_as_local": same})
        _log(f"ray K={k}: search {search_s:.1f} s, sweep {sweep_s:.1f} s, heavy {heavy_s or 0:.1f} s, "
             f"same front as local: {same}")
    for r in rows:
        r["search_speedup"] = rows[0]["search_s"] / r["search_s"]
        r["sweep_speedup"] = rows[0]["sweep_s"] / r["sweep_s"]
        r["heavy_speedup"] = rows[0]["heavy_s"] / r["heavy_s"] if r["heavy_s"] else None
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100, help="trials per small model (default 100)")
    p.add_argument("--minilm-trials", type=int, default=50,
                   help="trials on minilm-topics when it is registered (default 50; 0 skips it: ~10 s a trial here)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray scaling part")
    p.add_argument("--no-heavy", action="store_true", help="Ray scaling without the minilm-topics batch")
    args = p.parse_args(argv)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summaries, rows = [], []
        for m in MODELS:
            s, r = front_vs_baselines(m, args.trials)
            summaries.append(s)
            rows += r
        big = minilm(args.minilm_trials) if args.minilm_trials > 0 else None
        from compression_core.workload import workload_names

        heavy = "minilm-topics" if "minilm-topics" in workload_names() and not args.no_heavy else None
        scaling = [] if args.no_ray else ray_scaling(heavy=heavy)
    finally:
        torch.set_num_threads(old)
    result = {"environment": environment(), "trials": args.trials, "models": summaries, "levels": rows,
              "minilm": big, "ray_scaling": scaling,
              "note": "shared 2-core machine, 1 thread per trial; accuracies on the test split (which also selects "
                      "the front: optimistic by the selection)"}
    parts = [
        "Search summary (seed 0, local executor; first pt: workload built and imports warm, as in the dashboard's "
        "process; cold: the first search in a fresh process)",
        table(summaries, [("model", "model", "s"), ("trials", "trials", "d"), ("seconds", "s", ".1f"),
                          ("first_point_seconds", "first pt s", ".2f"),
                          ("cold_first_point_seconds", "cold", ".2f"), ("baseline_acc", "base acc", ".4f"),
                          ("baseline_bytes", "base B", ",d"), ("front_points", "front", "d"),
                          ("best_at_0.15x", "best<=0.15x", ".4f"), ("point_0.15x_within_1pt", "<=0.15x,<=1pt", ""),
                          ("uniform_min_ratio", "uniform min", ".3f"), ("uniform_levels", "levels", "d"),
                          ("beats_uniform_all", "beats uniform", ""), ("beats_fit_levels", "beats fit", "d"),
                          ("seeds_beaten", "seeds beaten", "s")]),
        "Per size level: most accurate uniform / fit_budget point within the level vs the best front point no larger "
        "(- : the uniform curve / the fit does not reach the level)",
        table(rows, [("model", "model", "s"), ("level", "level", ".1f"), ("budget_bytes", "budget B", ",d"),
                     ("uniform_bytes", "uniform B", ",d"), ("uniform_acc", "uniform acc", ".4f"),
                     ("front_acc_vs_uniform", "front acc", ".4f"), ("beats_uniform", "beats", ""),
                     ("fit_bytes", "fit B", ",d"), ("fit_acc", "fit acc", ".4f"),
                     ("front_acc_vs_fit", "front acc", ".4f"), ("beats_fit", "beats fit", "")]),
    ]
    if big is not None:
        parts += [f"minilm-topics: {big['trials']} trials in {big['seconds']:.0f} s, baseline {big['baseline_acc']:.4f} "
                  f"at {big['baseline_bytes']:,} B; uniform settings strictly beaten at equal or smaller size: "
                  f"{big['seeds_beaten']}",
                  table(big["settings"], [("setting", "uniform setting", "s"), ("bytes", "bytes", ",d"),
                                          ("ratio", "ratio", ".3f"), ("acc", "acc", ".4f"),
                                          ("front_bytes", "front B", ",d"), ("front_acc", "front acc", ".4f"),
                                          ("beaten", "beaten", "")])]
    if scaling:
        parts += ["Ray, local runtime on 127.0.0.1, K worker CPUs (search: lenet300 48 trials batch 8, ~50 ms tasks; "
                  "sweep: digits-cnn quantize + prune 2.5 % grid; heavy: 4 minilm-topics trials in one batch)",
                  table(scaling, [("workers", "K", "d"), ("startup_s", "startup s", ".1f"),
                                  ("warm_up_s", "warm-up s", ".1f"), ("search_s", "search s", ".1f"),
                                  ("search_speedup", "speedup", ".2f"), ("sweep_s", "sweep s", ".1f"),
                                  ("sweep_speedup", "speedup", ".2f"), ("heavy_s", "heavy s", ".1f"),
                                  ("heavy_speedup", "speedup", ".2f"), ("same_front_as_local", "same front", "")])]
    parts.append("Machine shared with other engineers' jobs (2 cores): timings are noisy, ratios from one run.")
    emit(result, args.json, "\n\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
