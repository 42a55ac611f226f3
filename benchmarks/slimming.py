"""Network Slimming vs plain L2 channel pruning on digits-cnn and mnist-cnn at 30/50/70% of the channels.

    python -m benchmarks.slimming [--json]

Same training budget for both: slimming gets SPARSITY_EPOCHS of L1-penalised training, prunes (|gamma|, per layer)
and fine-tunes FT_EPOCHS; L2 prunes first (filter L2 norm x BN scale, per layer) and fine-tunes
SPARSITY_EPOCHS + FT_EPOCHS. Per layer, both remove the same number of channels, so the shrunk architectures are
identical and only which channels go (and the training) differs. Accuracy before fine-tuning is shown too.
Global-threshold slimming (one |gamma| cut over all layers, the paper's setting) is a third row: its per-layer
counts differ, so its parameter count is shown.
"""

from __future__ import annotations

import time

import torch

import sample_models
from compression_core import FineTuneConfig, ShrinkConfig, SlimmingConfig, StructuredPruneConfig, accuracy, fine_tune, prune

from .common import emit, environment, parser, progress, table

MODELS = ("digits-cnn", "mnist-cnn")
AMOUNTS = (0.3, 0.5, 0.7)
SPARSITY_EPOCHS = {"digits-cnn": 10, "mnist-cnn": 4}
FT_EPOCHS = {"digits-cnn": 3, "mnist-cnn": 1}


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run() -> dict:
    torch.set_num_threads(1)
    rows = []
    for name in MODELS:
        wl = sample_models.load(name)
        t = wl.test
        base = accuracy(wl.model, t.x, t.y)
        se, fe = SPARSITY_EPOCHS[name], FT_EPOCHS[name]
        ft = FineTuneConfig(epochs=fe, lr=1e-3)
        ft_long = FineTuneConfig(epochs=se + fe, lr=1e-3)
        for amount in AMOUNTS:
            progress(f"{name}: {amount:.0%} channels, L2 then slimming")
            t0 = time.perf_counter()
            l2 = prune(prune(wl.model, StructuredPruneConfig(amount=amount, importance="l2"), wl), ShrinkConfig(), wl)
            l2_ft = fine_tune(l2, wl.train.x, wl.train.y, ft_long)
            rows.append({"model": name, "amount": amount, "method": "L2 channels", "baseline": base,
                         "params": _params(l2), "acc_pruned": accuracy(l2, t.x, t.y),
                         "acc_finetuned": accuracy(l2_ft, t.x, t.y), "epochs": f"0 + {se + fe}",
                         "seconds": time.perf_counter() - t0})
            for scope in ("layer", "global"):
                t0 = time.perf_counter()
                cfg = SlimmingConfig(amount=amount, scope=scope, epochs=se)
                sl = prune(wl.model, cfg, wl)
                sl_ft = fine_tune(sl, wl.train.x, wl.train.y, ft)
                rows.append({"model": name, "amount": amount, "method": f"slimming ({scope})", "baseline": base,
                             "params": _params(sl), "acc_pruned": accuracy(sl, t.x, t.y),
                             "acc_finetuned": accuracy(sl_ft, t.x, t.y), "epochs": f"{se} + {fe}",
                             "seconds": time.perf_counter() - t0})
    return {"environment": environment(), "sparsity_epochs": SPARSITY_EPOCHS, "finetune_epochs": FT_EPOCHS,
            "penalty": SlimmingConfig().penalty, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    result = run()
    text = table(result["rows"], [
        ("model", "model", ""), ("amount", "channels removed", ".0%"), ("method", "method", ""),
        ("params", "params", ","), ("baseline", "fp32 acc", ".4f"), ("acc_pruned", "acc pruned", ".4f"),
        ("acc_finetuned", "acc fine-tuned", ".4f"), ("epochs", "epochs (sparsity + ft)", ""),
        ("seconds", "s", ".1f"),
    ])
    emit(result, args.json, text + f"\n(penalty {result['penalty']} x sum|gamma|; 1 thread; same total epochs per row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
