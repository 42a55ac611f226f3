"""Sensitivity analysis and budget fitting, with measured numbers.

    python -m benchmarks.sensitivity [--json]

1. Full pruning sweep time (every prunable layer, classifier left alone, x 11 levels 0..95 %) for digits-cnn and
   mnist-lenet300, and the number of accuracy evaluations. Evaluation is batched as ``compression_core.sensitivity``
   does it: one private working copy with each layer's weight swapped in place and restored, the whole calibration
   split in ONE batch under ``torch.no_grad``, and for these nn.Sequential models each layer's input cached once so
   a point runs only the suffix from the changed layer on. Timed on 1 thread, median of 3 runs (shared machine).
2. At the same file size (sparse-encoded, ``sparse_size_bytes``), budget-fitted per-layer sparsity vs uniform
   per-layer sparsity: the budget is the file size of uniform magnitude pruning at 80 / 85 / 90 %; the fit
   (``fit_budget``, sensitivity curves on the calibration split) must produce a file no larger; accuracy on the TEST
   split, no fine-tuning.
"""

from __future__ import annotations

import statistics
import time

import torch

import sample_models
from compression_core import accuracy, prune, sparse_size_bytes
from compression_core.budget import fit_budget
from compression_core.prune import UnstructuredPruneConfig
from compression_core.sensitivity import EVALUATION, sensitivity

from .common import emit, environment, parser, progress, table

MODELS = ("digits-cnn", "mnist-lenet300")
UNIFORM = (0.8, 0.85, 0.9)


def sweep_times(name: str, runs: int = 3) -> dict:
    wl = sample_models.load(name)
    times = []
    for r in range(runs):
        progress(f"{name}: sensitivity sweep {r + 1}/{runs}")
        t0 = time.perf_counter()
        res = sensitivity(wl.model, wl, "prune", name=name)
        times.append(time.perf_counter() - t0)
    points = sum(len(c.points) for c in res.layers)
    return {"model": name, "layers": len(res.layers), "levels": len(res.layers[0].points), "evaluations": points,
            "calib_samples": res.samples, "seconds_median": statistics.median(times), "seconds_max": max(times),
            "within_10s": max(times) <= 10.0}


def fitted_vs_uniform(name: str) -> list[dict]:
    wl = sample_models.load(name)
    test = wl.test
    rows = []
    for u in UNIFORM:
        progress(f"{name}: fit vs uniform {u:.0%}")
        uniform = prune(wl.model, UnstructuredPruneConfig(amount=u, scope="layer"), wl)
        budget = sparse_size_bytes(uniform)
        t0 = time.perf_counter()
        fit = fit_budget(wl.model, wl, {"max_size_bytes": budget})
        seconds = time.perf_counter() - t0
        fitted = prune(wl.model, fit.step(), wl)
        size = sparse_size_bytes(fitted)
        ua, fa = accuracy(uniform, test.x, test.y), accuracy(fitted, test.x, test.y)
        rows.append({"model": name, "uniform_sparsity": u, "budget_bytes": budget, "uniform_bytes": budget,
                     "fitted_bytes": size, "meets_budget": size <= budget, "uniform_test_acc": ua,
                     "fitted_test_acc": fa, "gain_points": (fa - ua) * 100,
                     "fitted": ", ".join(f"{k}={v:.2f}" for k, v in fit.choice.items()), "fit_seconds": seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweeps = [sweep_times(n) for n in MODELS]
        fits = [r for n in MODELS for r in fitted_vs_uniform(n)]
    finally:
        torch.set_num_threads(old)
    result = {"environment": environment(), "evaluation": EVALUATION, "sweeps": sweeps, "fitted_vs_uniform": fits,
              "note": "timings on a shared 2-core machine, 1 thread"}
    text = "\n\n".join([
        "Full pruning sweep (every layer but the classifier x 11 levels, calibration split; " + EVALUATION + ")",
        table(sweeps, [("model", "model", "s"), ("layers", "layers", "d"), ("levels", "levels", "d"),
                       ("evaluations", "evals", "d"), ("calib_samples", "calib", "d"),
                       ("seconds_median", "median s", ".3f"), ("seconds_max", "max s", ".3f"),
                       ("within_10s", "<=10 s", "")]),
        "Same sparse-encoded file size: budget-fitted per-layer sparsity vs uniform (test accuracy, no fine-tuning)",
        table(fits, [("model", "model", "s"), ("uniform_sparsity", "uniform", ".2f"), ("budget_bytes", "budget B", ",d"),
                     ("fitted_bytes", "fitted B", ",d"), ("uniform_test_acc", "uniform acc", ".4f"),
                     ("fitted_test_acc", "fitted acc", ".4f"), ("gain_points", "gain pts", "+.1f"),
                     ("fitted", "fitted per-layer sparsity", "s"), ("fit_seconds", "fit s", ".2f")]),
        "Machine shared with other engineers' jobs: timings are noisy.",
    ])
    emit(result, args.json, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
