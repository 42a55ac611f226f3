"""Distillation: the same student trained alone vs distilled from a teacher (same lr), over 3 seeds, in two regimes.

    python -m benchmarks.distillation [--json] [--seeds 3] [--only all-labels|few-labels]

- **all labels** (the no-gain rows, kept): the student trains on every labelled training image, alone (a
  ``finetune`` step) or distilled (Hinton et al. 2015: T=4, alpha=0.9) for the same epochs. On 8x8 digits and the
  MNIST subset the labels already carry what a small MLP can learn: distillation gains nothing measurable.
- **few labels** (where it helps): only 50 training images are labelled (5 per class, the workload
  ``benchmarks.distillation:digits_mlp_50_labels``). Alone, the student learns from those 50. Distilled, it learns
  from the teacher's soft targets (T=4, alpha=1: no label used) on all 1,257 training images, labelled or not:
  the teacher's knowledge reaches the student through images nobody labelled.

Students start from a fresh initialisation (a ``reinit`` step with the seed). Every row is a recipe run through
``apply_recipe``; accuracy is on the test split; errors = misclassified test images.
"""

from __future__ import annotations

import statistics
import time

import torch

from compression_core.recipe import apply_recipe, load_recipe
from compression_core.workload import Workload, resolve_workload

from .common import emit, environment, parser, table

LABELS_PER_CLASS = 5
FEW_LABELS_REF = "benchmarks.distillation:digits_mlp_50_labels"
REGIMES = {  # regime -> [(student, student for the 'alone' run, teacher, epochs alone, epochs distilled, lr, T, alpha)]
    "all-labels": [
        ("digits-mlp", "digits-mlp", "digits-cnn", 30, 30, 3e-3, 4.0, 0.9),
        ("mnist-lenet300", "mnist-lenet300", "mnist-cnn", 8, 8, 2e-3, 4.0, 0.9),
    ],
    # 50 labelled images are 1 batch: 200 epochs alone = 200 steps, about as many as 10 epochs over 1,257 images
    "few-labels": [
        ("digits-mlp", FEW_LABELS_REF, "digits-cnn", 200, 20, 3e-3, 4.0, 1.0),
    ],
}


def digits_mlp_50_labels() -> Workload:
    """digits-mlp whose training split keeps only 5 labelled images per class (50 in all, a fixed choice); test,
    calibration and architecture unchanged. The 'alone' student of the few-labels regime."""
    base = resolve_workload("digits-mlp")
    y = base.train.y
    g = torch.Generator().manual_seed(1234)
    idx = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:LABELS_PER_CLASS]]
                     for c in range(int(y.max()) + 1)])
    return Workload(name=f"digits-mlp-{len(idx)}-labels", model=base.model, train=base.train.take(idx),
                    calib=base.calib, test=base.test, classifier=base.classifier, build=base.build, lr=base.lr,
                    description=f"digits-mlp trained on {len(idx)} labelled images", info=dict(base.info))


def recipes(regime: str, row: tuple, seed: int) -> dict[str, dict]:
    """The two recipes of one row and seed: {"alone": ..., "distilled": ...}."""
    student, alone_ref, teacher, ep_alone, ep_kd, lr, temperature, alpha = row
    reinit = {"kind": "reinit", "seed": seed}
    return {
        "alone": {"version": 1, "model": alone_ref, "seed": seed, "steps": [
            reinit, {"kind": "finetune", "epochs": ep_alone, "lr": lr, "seed": seed}]},
        "distilled": {"version": 1, "model": student, "seed": seed, "steps": [
            reinit, {"kind": "distill", "teacher": teacher, "temperature": temperature, "alpha": alpha,
                     "epochs": ep_kd, "lr": lr, "seed": seed}]},
    }


def _labels_used(regime: str, mode: str, ref: str) -> int:
    if mode == "distilled" and regime == "few-labels":
        return 0  # alpha = 1: soft targets only
    return len(resolve_workload(ref).train)


def run(seeds: int = 3, only: str | None = None, progress=None) -> dict:
    rows = []
    for regime, pairs in REGIMES.items():
        if only and regime != only:
            continue
        for row in pairs:
            student, alone_ref, teacher, ep_alone, ep_kd, lr, temperature, alpha = row
            n_test = len(resolve_workload(student).test)
            for mode in ("alone", "distilled"):
                accs, t0 = [], time.perf_counter()
                for seed in range(seeds):
                    if progress is not None:
                        progress(f"{regime} {student} {mode} seed {seed}")
                    recipe = recipes(regime, row, seed)[mode]
                    r = apply_recipe(load_recipe(recipe), with_latency=False, measure_before=False)
                    accs.append(r.after.accuracy)
                errors = [round((1 - a) * n_test) for a in accs]
                ref = recipe["model"]
                rows.append({
                    "regime": regime, "student": student, "teacher": teacher if mode == "distilled" else "-",
                    "mode": mode, "epochs": ep_alone if mode == "alone" else ep_kd,
                    "labelled_images": _labels_used(regime, mode, ref),
                    "images_seen": len(resolve_workload(ref).train), "seeds": seeds, "test_samples": n_test,
                    "accuracy_mean": statistics.mean(accs), "accuracy_std": statistics.pstdev(accs),
                    "errors_mean": statistics.mean(errors), "errors": errors, "accuracies": accs,
                    "seconds": time.perf_counter() - t0, "recipe": recipes(regime, row, 0)[mode],
                })
    return {"environment": environment(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    import sys

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--only", choices=list(REGIMES), default=None, help="run one regime only")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args.seeds, args.only, progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    text = table(result["rows"], [
        ("regime", "regime", ""), ("student", "student", ""), ("teacher", "teacher", ""), ("mode", "mode", ""),
        ("labelled_images", "labels", "d"), ("images_seen", "images", "d"), ("epochs", "epochs", "d"),
        ("accuracy_mean", "acc mean", ".4f"), ("accuracy_std", "acc std", ".4f"),
        ("errors_mean", "errors mean", ".1f"), ("test_samples", "of", "d"), ("seconds", "s", ".1f"),
    ])
    teachers = sorted({r["teacher"] for r in result["rows"] if r["teacher"] != "-"})
    acc = ", ".join(f"{t} {resolve_workload(t).info.get('baseline_metric') or 0:.4f}" for t in teachers)
    emit(result, args.json, text + f"\nteachers' test accuracy: {acc}\n(Hinton et al. 2015, MNIST: 146 errors "
         "alone -> 74 distilled, on a 10,000-image test set)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
