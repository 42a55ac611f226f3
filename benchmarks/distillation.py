"""Distillation: the same student trained alone vs distilled from a teacher (same epochs, lr), over 3 seeds.

    python -m benchmarks.distillation [--json] [--seeds 3]

Students start from a fresh initialisation (a ``reinit`` step with the seed); "alone" is a ``finetune`` step on
the labels, "distilled" a ``distill`` step (Hinton et al. 2015: T=4, alpha=0.9) with the same epochs and lr.
Both run through ``apply_recipe``, so each row is a reproducible recipe. Accuracy is on the test split; errors =
misclassified test images.
"""

from __future__ import annotations

import statistics
import time

import sample_models
from compression_core.recipe import apply_recipe, load_recipe

from .common import emit, environment, parser, table

PAIRS = [  # (student, teacher, epochs, lr)
    ("digits-mlp", "digits-cnn", 30, 3e-3),
    ("mnist-lenet300", "mnist-cnn", 8, 2e-3),
]


def _recipe(student: str, seed: int, step: dict) -> dict:
    return {"version": 1, "model": student, "seed": seed, "steps": [{"kind": "reinit", "seed": seed}, step]}


def run(seeds: int = 3) -> dict:
    rows = []
    for student, teacher, epochs, lr in PAIRS:
        n_test = len(sample_models.data(student).test)
        for mode in ("alone", "distilled"):
            accs, t0 = [], time.perf_counter()
            for seed in range(seeds):
                if mode == "alone":
                    step = {"kind": "finetune", "epochs": epochs, "lr": lr, "seed": seed}
                else:
                    step = {"kind": "distill", "teacher": teacher, "temperature": 4.0, "alpha": 0.9,
                            "epochs": epochs, "lr": lr, "seed": seed}
                r = apply_recipe(load_recipe(_recipe(student, seed, step)), with_latency=False, measure_before=False)
                accs.append(r.after.accuracy)
            errors = [round((1 - a) * n_test) for a in accs]
            rows.append({
                "student": student, "teacher": teacher if mode == "distilled" else "-", "mode": mode,
                "epochs": epochs, "seeds": seeds, "test_samples": n_test,
                "accuracy_mean": statistics.mean(accs), "accuracy_std": statistics.pstdev(accs),
                "errors_mean": statistics.mean(errors), "errors": errors, "accuracies": accs,
                "seconds": time.perf_counter() - t0,
            })
    return {"environment": environment(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    result = run(args.seeds)
    text = table(result["rows"], [
        ("student", "student", ""), ("teacher", "teacher", ""), ("mode", "mode", ""), ("epochs", "epochs", "d"),
        ("accuracy_mean", "acc mean", ".4f"), ("accuracy_std", "acc std", ".4f"),
        ("errors_mean", "errors mean", ".1f"), ("test_samples", "of", "d"), ("seconds", "s", ".1f"),
    ])
    teachers = ", ".join(f"{t} {sample_models.load(t).trained['test_accuracy']:.4f}" for _, t, _, _ in PAIRS)
    emit(result, args.json, text + f"\nteachers' test accuracy: {teachers}\n(Hinton et al. 2015, MNIST: 146 errors "
         "alone -> 74 distilled, on a 10,000-image test set)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
