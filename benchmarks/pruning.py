"""Pruning: why a pruned model is (not) smaller and (not) faster, with measured numbers.

    python -m benchmarks.pruning [--json]

1. mnist-lenet300, global unstructured magnitude pruning at 50-98%, with and without fine-tuning: accuracy, dense
   fp32 file vs sparse-encoded file.
2. digits-cnn, 50% of conv channels masked vs shrunk: params, FLOPs, batch-32 latency (1 thread, medians, same run).
3. digits-vit, half the heads removed and shrunk: params, output difference, per-head importance.
4. Lottery tickets on mnist-lenet300 (Frankle & Carbin 2019): ticket vs random re-initialisation, 3 seeds.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import sample_models
from compression_core import StepContext, accuracy, latency, measure, size_bytes
from compression_core.prune import (
    LotteryTicketConfig,
    ShrinkConfig,
    StructuredPruneConfig,
    UnstructuredPruneConfig,
    head_accuracy_drop,
    head_scores,
    lottery_ticket,
    prune,
)
from compression_core.train import FineTuneConfig, fine_tune

from .common import emit, environment, parser, table

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
FT_EPOCHS = 3  # fine-tuning after pruning, at the learning rate and weight decay the model was trained with
LT = LotteryTicketConfig(rounds=9, epochs=8, rate=0.2, lr=2e-3, reinit="random")  # 100% .. 13.4% weights left
LT_SEEDS = (0, 1, 2)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fine_tune_cfg(info) -> FineTuneConfig:
    return FineTuneConfig(epochs=FT_EPOCHS, lr=info.train.lr, weight_decay=info.train.weight_decay)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _max_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    return float((a.eval()(x) - b.eval()(x)).abs().max())


def unstructured_lenet() -> dict:
    sm = sample_models.load("mnist-lenet300")
    x, y = sm.data.test.x, sm.data.test.y
    dense_acc, dense_size = accuracy(sm.model, x, y), size_bytes(sm.model)
    rows = []
    for amount in SPARSITIES:
        pruned = prune(sm.model, UnstructuredPruneConfig(amount=amount, scope="global"), sm)
        tuned = fine_tune(pruned, sm.data.train.x, sm.data.train.y, _fine_tune_cfg(sm.info))
        stats = measure(tuned, sm.data, with_latency=False)
        rows.append({
            "sparsity": amount, "weights_sparsity": 1 - stats.nonzero_params / stats.params,
            "accuracy": accuracy(pruned, x, y), "accuracy_finetuned": stats.accuracy,
            "drop_finetuned_points": 100 * (dense_acc - stats.accuracy),
            "dense_bytes": stats.size_bytes, "sparse_bytes": stats.sparse_size_bytes,
            "sparse_ratio": stats.sparse_size_bytes / dense_size,
        })
        _log(f"lenet300 {amount:.0%}: {rows[-1]['accuracy']:.4f} -> {stats.accuracy:.4f} after fine-tuning")
    return {"model": "mnist-lenet300", "dense_accuracy": dense_acc, "dense_bytes": dense_size,
            "fine_tune": _fine_tune_cfg(sm.info).model_dump(), "scope": "global (classifier fc3 left dense)", "rows": rows}


def _latencies(models: dict[str, torch.nn.Module], x: torch.Tensor, repeats: int = 7) -> dict[str, dict]:
    """Each model's latency (1 thread) in ``repeats`` interleaved rounds: the median of its per-round medians, and
    the median of its per-round ratio to the first model (timed back to back, so a busy machine cancels out)."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            times[k].append(latency(m, x, threads=1, min_run_time=0.2)[0])
    ref = next(iter(models))
    return {k: {"ms": statistics.median(v), "ratio": statistics.median(a / b for a, b in zip(v, times[ref]))}
            for k, v in times.items()}


def channels_cnn() -> dict:
    sm = sample_models.load("digits-cnn")
    masked = prune(sm.model, StructuredPruneConfig(unit="channels", amount=0.5), sm)
    shrunk = prune(masked, ShrinkConfig(), sm)
    x32 = sm.data.test.x[:32]
    lat = _latencies({"dense": sm.model, "masked": masked, "shrunk": shrunk}, x32)
    rows = []
    for label, m in [("dense", sm.model), ("masked", masked), ("shrunk", shrunk)]:
        s = measure(m, sm.data, with_latency=False)
        rows.append({"model": label, "params": _params(m), "nonzero_params": s.nonzero_params, "flops": s.flops,
                     "dense_bytes": s.size_bytes, "sparse_bytes": s.sparse_size_bytes, "accuracy": s.accuracy,
                     "latency_ms_b32": lat[label]["ms"], "latency_ratio": lat[label]["ratio"]})
    dense = rows[0]
    for r in rows:
        r["params_ratio"], r["flops_ratio"] = r["params"] / dense["params"], r["flops"] / dense["flops"]
    tuned = fine_tune(shrunk, sm.data.train.x, sm.data.train.y, _fine_tune_cfg(sm.info))
    rows.append({**rows[-1], "model": "shrunk+ft", "accuracy": accuracy(tuned, sm.data.test.x, sm.data.test.y)})
    shapes = {n: tuple(shrunk.get_submodule(n).weight.shape) for n in ("conv1", "conv2", "fc1")}
    return {"model": "digits-cnn", "amount": 0.5, "unit": "channels (conv1, conv2; BatchNorm-aware L1)",
            "rows": rows, "shrunk_shapes": {k: list(v) for k, v in shapes.items()},
            "max_abs_diff_shrunk_vs_masked": _max_diff(masked, shrunk, sm.data.test.x)}


def heads_vit() -> dict:
    sm = sample_models.load("digits-vit")
    x, y = sm.data.test.x, sm.data.test.y
    drops = head_accuracy_drop(sm.model, x, y)
    masked = prune(sm.model, StructuredPruneConfig(unit="heads", amount=0.5), sm)
    shrunk = prune(masked, ShrinkConfig(), sm)
    heads = []
    for name, per_head in drops.items():
        scores = head_scores(sm.model.get_submodule(name), "l1")
        kept_mask = masked.get_submodule(name).proj.weight_mask[0].reshape(-1, sm.model.get_submodule(name).head_dim)
        for h, d in enumerate(per_head):
            heads.append({"layer": name, "head": h, "accuracy_drop": d, "l1_score": float(scores[h]),
                          "removed": bool(kept_mask[h].sum() == 0)})
    rows = []
    for label, m in [("dense", sm.model), ("masked", masked), ("shrunk", shrunk)]:
        rows.append({"model": label, "params": _params(m), "accuracy": accuracy(m, x, y),
                     "heads": [b.attn.n_heads for b in m.blocks], "dense_bytes": size_bytes(m)})
    return {"model": "digits-vit", "amount": 0.5, "importance": "l1 (q,k,v rows + proj columns)", "rows": rows,
            "max_abs_diff_shrunk_vs_masked": _max_diff(masked, shrunk, x), "heads": heads}


def lottery() -> dict:
    sm = sample_models.load("mnist-lenet300")
    per_seed = []
    t0 = time.perf_counter()
    for seed in LT_SEEDS:
        ctx = StepContext(data=sm.data, info=sm.info, seed=seed, progress=lambda f, m, s=seed: _log(f"LT seed {s}: {m}"))
        _, rounds = lottery_ticket(sm.model, LT, ctx)
        per_seed.append(rounds)
    rows = []
    for r in range(LT.rounds + 1):
        ticket = [s[r].accuracy for s in per_seed]
        rand = [s[r].random_accuracy for s in per_seed]
        rows.append({"round": r, "weights_left": per_seed[0][r].weights_left,
                     "ticket_accuracy": statistics.mean(ticket), "ticket_std": statistics.pstdev(ticket),
                     "random_accuracy": statistics.mean(rand), "random_std": statistics.pstdev(rand)})
    dense = rows[0]["ticket_accuracy"]
    near21 = min(rows, key=lambda r: abs(r["weights_left"] - 0.21))
    return {"model": "mnist-lenet300", "settings": LT.model_dump(), "seeds": list(LT_SEEDS),
            "init": "torch.manual_seed(train.seed + seed); build() (seed 0 = the shipped model's init)",
            "rows": rows, "seconds": time.perf_counter() - t0,
            "ticket_at_21pct_vs_dense_points": 100 * (near21["ticket_accuracy"] - dense),
            "random_at_21pct_vs_dense_points": 100 * (near21["random_accuracy"] - dense)}


def run() -> dict:
    torch.set_num_threads(1)  # every number on one thread: latency as stated, training deterministic and unaffected
    return {"environment": environment(), "unstructured_lenet300": unstructured_lenet(),
            "channels_digits_cnn": channels_cnn(), "heads_digits_vit": heads_vit(), "lottery_ticket": lottery()}


def render(res: dict) -> str:
    u, c, v, lt = (res["unstructured_lenet300"], res["channels_digits_cnn"], res["heads_digits_vit"],
                   res["lottery_ticket"])
    out = [f"1. mnist-lenet300, global unstructured L1 (fc1+fc2; fc3 dense); dense accuracy {u['dense_accuracy']:.4f}, "
           f"dense fp32 file {u['dense_bytes']:,} B; fine-tuning {u['fine_tune']['epochs']} epochs lr {u['fine_tune']['lr']}",
           table(u["rows"], [("sparsity", "pruned", ".0%"), ("weights_sparsity", "all weights", ".1%"),
                             ("accuracy", "acc", ".4f"), ("accuracy_finetuned", "acc fine-tuned", ".4f"),
                             ("drop_finetuned_points", "drop (pts)", ".2f"), ("dense_bytes", "dense B", ","),
                             ("sparse_bytes", "sparse B", ","), ("sparse_ratio", "sparse/dense", ".3f")]),
           "",
           f"2. digits-cnn, 50% of conv channels (L1 x BatchNorm scale): masked vs shrunk; latency batch 32, 1 thread, "
           f"median of 7 interleaved rounds (latency x = median per-round ratio to dense); max |shrunk - masked| = {c['max_abs_diff_shrunk_vs_masked']:.2e}",
           table(c["rows"], [("model", "model", ""), ("params", "params", ","), ("params_ratio", "params x", ".3f"),
                             ("flops", "FLOPs", ","), ("flops_ratio", "FLOPs x", ".3f"),
                             ("dense_bytes", "file B", ","), ("sparse_bytes", "sparse B", ","),
                             ("accuracy", "acc", ".4f"), ("latency_ms_b32", "ms @b32", ".3f"),
                             ("latency_ratio", "latency x", ".3f")]),
           f"(shrunk+ft: the shrunk model fine-tuned {FT_EPOCHS} epochs; masking 50% of channels without "
           f"fine-tuning costs most of the accuracy)",
           f"shrunk shapes: {c['shrunk_shapes']}",
           "",
           f"3. digits-vit, half the heads removed (L1) and shrunk; max |shrunk - masked| = "
           f"{v['max_abs_diff_shrunk_vs_masked']:.2e}",
           table([{**r, "heads": str(r["heads"])} for r in v["rows"]],
                 [("model", "model", ""), ("params", "params", ","), ("heads", "heads/block", ""),
                  ("dense_bytes", "file B", ","), ("accuracy", "acc", ".4f")]),
           "per-head importance (test accuracy drop when that head alone is masked; removed = pruned by L1):",
           table(v["heads"], [("layer", "layer", ""), ("head", "head", "d"), ("accuracy_drop", "acc drop", "+.4f"),
                              ("l1_score", "L1 score", ".2f"), ("removed", "removed", "")]),
           "",
           f"4. lottery ticket, mnist-lenet300, per-layer IMP {LT.rate:.0%}/round, rewind to init, {LT.epochs} epochs/"
           f"round lr {LT.lr}, seeds {LT_SEEDS}, mean (std) test accuracy; round 0 = dense trained the same way "
           f"({lt['seconds']:.0f} s)",
           table([{**r, "ticket": f"{r['ticket_accuracy']:.4f} ({r['ticket_std']:.4f})",
                   "random": f"{r['random_accuracy']:.4f} ({r['random_std']:.4f})"} for r in lt["rows"]],
                 [("round", "round", "d"), ("weights_left", "weights left", ".1%"), ("ticket", "ticket", ""),
                  ("random", "random re-init", "")]),
           f"at ~21% weights: ticket {lt['ticket_at_21pct_vs_dense_points']:+.2f} pts vs dense, random re-init "
           f"{lt['random_at_21pct_vs_dense_points']:+.2f} pts",
           "(shared 2-core machine: compare latency ratios from the same run only)"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    result = run()
    emit(result, args.json, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
