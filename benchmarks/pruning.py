"""Pruning: why a pruned model is (not) smaller and (not) faster, with measured numbers.

    python -m benchmarks.pruning [--json]

1. mnist-lenet300, global unstructured magnitude pruning at 50-98%, with and without fine-tuning: accuracy, dense
   fp32 file vs sparse-encoded file.
2. digits-cnn, 50% of conv channels masked vs shrunk: params, FLOPs, batch-32 latency (1 thread, medians, same run).
3. digits-vit, half the heads removed and shrunk: params, output difference, per-head importance.
4. Lottery tickets on mnist-lenet300 (Frankle & Carbin 2019): ticket vs random re-initialisation, 3 seeds.
5. 50% of conv channels + shrink on CNNs with residual adds, depthwise convs, a flatten into a Linear, concatenations
   and squeeze-excite, and on digits-cnn, next to Torch-Pruning's own MetaPruner at the same ratio: parameters,
   FLOPs, batch-32 latency (1 thread, same run) and max |shrunk - masked|. ``--workload REF`` (repeatable) adds
   any workload (e.g. a zoo CNN) to this table.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

from typing import Callable

import torch
from torch import nn

import sample_models
from compression_core import StepContext, Workload, accuracy, latency, measure, resolve_workload, size_bytes
from compression_core import inputs as I
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
from .generality import load_zoo

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
FT_EPOCHS = 3  # fine-tuning after pruning, at the learning rate and weight decay the model was trained with
LT = LotteryTicketConfig(rounds=9, epochs=8, rate=0.2, lr=2e-3, reinit="random")  # 100% .. 13.4% weights left
LT_SEEDS = (0, 1, 2)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fine_tune_cfg(wl: Workload) -> FineTuneConfig:
    trained_with = wl.info["train_settings"]
    return FineTuneConfig(epochs=FT_EPOCHS, lr=trained_with["lr"], weight_decay=trained_with["weight_decay"])


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _max_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    return float((a.eval()(x) - b.eval()(x)).abs().max())


def unstructured_lenet() -> dict:
    wl = sample_models.load("mnist-lenet300")
    x, y = wl.test.x, wl.test.y
    dense_acc, dense_size = accuracy(wl.model, x, y), size_bytes(wl.model)
    rows = []
    for amount in SPARSITIES:
        pruned = prune(wl.model, UnstructuredPruneConfig(amount=amount, scope="global"), wl)
        tuned = fine_tune(pruned, wl.train.x, wl.train.y, _fine_tune_cfg(wl))
        stats = measure(tuned, wl, with_latency=False)
        rows.append({
            "sparsity": amount, "weights_sparsity": 1 - stats.nonzero_params / stats.params,
            "accuracy": accuracy(pruned, x, y), "accuracy_finetuned": stats.accuracy,
            "drop_finetuned_points": 100 * (dense_acc - stats.accuracy),
            "dense_bytes": stats.size_bytes, "sparse_bytes": stats.sparse_size_bytes,
            "sparse_ratio": stats.sparse_size_bytes / dense_size,
        })
        _log(f"lenet300 {amount:.0%}: {rows[-1]['accuracy']:.4f} -> {stats.accuracy:.4f} after fine-tuning")
    return {"model": "mnist-lenet300", "dense_accuracy": dense_acc, "dense_bytes": dense_size,
            "fine_tune": _fine_tune_cfg(wl).model_dump(), "scope": "global (classifier fc3 left dense)", "rows": rows}


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
    wl = sample_models.load("digits-cnn")
    masked = prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5), wl)
    shrunk = prune(masked, ShrinkConfig(), wl)
    x32 = wl.test.x[:32]
    lat = _latencies({"dense": wl.model, "masked": masked, "shrunk": shrunk}, x32)
    rows = []
    for label, m in [("dense", wl.model), ("masked", masked), ("shrunk", shrunk)]:
        s = measure(m, wl, with_latency=False)
        rows.append({"model": label, "params": _params(m), "nonzero_params": s.nonzero_params, "flops": s.flops,
                     "dense_bytes": s.size_bytes, "sparse_bytes": s.sparse_size_bytes, "accuracy": s.accuracy,
                     "latency_ms_b32": lat[label]["ms"], "latency_ratio": lat[label]["ratio"]})
    dense = rows[0]
    for r in rows:
        r["params_ratio"], r["flops_ratio"] = r["params"] / dense["params"], r["flops"] / dense["flops"]
    tuned = fine_tune(shrunk, wl.train.x, wl.train.y, _fine_tune_cfg(wl))
    rows.append({**rows[-1], "model": "shrunk+ft", "accuracy": accuracy(tuned, wl.test.x, wl.test.y)})
    shapes = {n: tuple(shrunk.get_submodule(n).weight.shape) for n in ("conv1", "conv2", "fc1")}
    return {"model": "digits-cnn", "amount": 0.5, "unit": "channels (conv1, conv2; BatchNorm-aware L1)",
            "rows": rows, "shrunk_shapes": {k: list(v) for k, v in shapes.items()},
            "max_abs_diff_shrunk_vs_masked": _max_diff(masked, shrunk, wl.test.x)}


def heads_vit() -> dict:
    wl = sample_models.load("digits-vit")
    x, y = wl.test.x, wl.test.y
    drops = head_accuracy_drop(wl.model, x, y)
    masked = prune(wl.model, StructuredPruneConfig(unit="heads", amount=0.5), wl)
    shrunk = prune(masked, ShrinkConfig(), wl)
    heads = []
    for name, per_head in drops.items():
        scores = head_scores(wl.model.get_submodule(name), "l1")
        kept_mask = masked.get_submodule(name).proj.weight_mask[0].reshape(-1, wl.model.get_submodule(name).head_dim)
        for h, d in enumerate(per_head):
            heads.append({"layer": name, "head": h, "accuracy_drop": d, "l1_score": float(scores[h]),
                          "removed": bool(kept_mask[h].sum() == 0)})
    rows = []
    for label, m in [("dense", wl.model), ("masked", masked), ("shrunk", shrunk)]:
        rows.append({"model": label, "params": _params(m), "accuracy": accuracy(m, x, y),
                     "heads": [b.attn.n_heads for b in m.blocks], "dense_bytes": size_bytes(m)})
    return {"model": "digits-vit", "amount": 0.5, "importance": "l1 (q,k,v rows + proj columns)", "rows": rows,
            "max_abs_diff_shrunk_vs_masked": _max_diff(masked, shrunk, x), "heads": heads}


def lottery() -> dict:
    wl = sample_models.load("mnist-lenet300")
    per_seed = []
    t0 = time.perf_counter()
    for seed in LT_SEEDS:
        ctx = StepContext(data=wl, seed=seed, progress=lambda f, m, s=seed: _log(f"LT seed {s}: {m}"))
        _, rounds = lottery_ticket(wl.model, LT, ctx)
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


# ------------------------------------------------------------------ 5. channels + shrink vs Torch-Pruning
def _cnns() -> dict[str, Callable[[], nn.Module]]:
    """Section 5's CNNs: tests/zoo.py's architectures (the one copy the tests use too) at 3x32x32 sizes."""
    zoo = load_zoo()
    return {"residual CNN": lambda: zoo.ResNet(32, cin=3, deep=True),
            "depthwise CNN": lambda: zoo.DepthwiseCNN(cin=3, c=32, blocks=((64, 1), (128, 2), (128, 1))),
            "conv-flatten-Linear": lambda: zoo.FlattenCNN(cin=3, widths=(32, 64), hidden=128, side=32, pool_last=True),
            "DenseNet-style concat": lambda: zoo.DenseNet(cin=3, c=32, growth=24, layers=2, out=64),
            "squeeze-excite CNN": lambda: zoo.SECNN(cin=3, c=32, stride=2)}


def _cnn_workloads(extra: list[str]) -> list[Workload]:
    randomize_bn = load_zoo().randomize_bn  # per-channel BatchNorm statistics (as after training), seeded
    out = []
    for label, build in _cnns().items():
        torch.manual_seed(0)
        model = randomize_bn(build())
        x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        out.append(Workload(name=label, model=model, test=(x, torch.zeros(64, dtype=torch.long)), metric="agreement",
                            info={"random_weights": True}))
    out.append(resolve_workload("digits-cnn"))
    out += [resolve_workload(ref) for ref in extra]
    return out


def _flops(model: nn.Module, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        I.call(model.eval(), x)
    return int(fc.get_total_flops())


def _torch_pruning_meta(model: nn.Module, x, output_layer: str | None, amount: float) -> nn.Module:
    """Torch-Pruning's own MetaPruner on a copy: ``amount`` of every conv-rooted group, L1 group importance, the
    output layer kept (the same setting as ``prune_structured(unit='channels')``)."""
    import torch_pruning as tp

    ref = copy.deepcopy(model).eval()
    ignored = [ref.get_submodule(output_layer)] if output_layer else []
    args, kwargs = I.example_args(I.head(x, 2))
    pruner = tp.pruner.MetaPruner(ref, kwargs or args[0], importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=amount, ignored_layers=ignored, root_module_types=[nn.Conv2d])
    pruner.step()
    return ref


def channels_vs_torch_pruning(extra: list[str] | None = None, amount: float = 0.5) -> dict:
    rows = []
    for wl in _cnn_workloads(extra or []):
        _log(f"channels {amount:.0%} + shrink vs Torch-Pruning: {wl.name}")
        model = wl.model.eval()
        x = wl.test.x
        masked = prune(model, StructuredPruneConfig(unit="channels", amount=amount), wl)
        shrunk = prune(masked, ShrinkConfig(), wl)
        ref = _torch_pruning_meta(model, x, wl.output_layer, amount)
        x32 = I.head(x, 32)
        lat = _latencies({"dense": model, "ours": shrunk, "tp": ref}, x32, repeats=9)
        with torch.no_grad():
            diff = float((I.call(masked.eval(), x) - I.call(shrunk.eval(), x)).abs().max())
        trained = not wl.info.get("random_weights")
        metric = {k: wl.score(m, "test") if trained else None for k, m in
                  (("dense", model), ("ours", shrunk), ("tp", ref))}
        p0, f0 = _params(model), _flops(model, x32)
        rows.append({
            "model": wl.name, "params": p0, "params_ratio": _params(shrunk) / p0, "tp_params_ratio": _params(ref) / p0,
            "flops_ratio": _flops(shrunk, x32) / f0, "tp_flops_ratio": _flops(ref, x32) / f0,
            "latency_ms_b32": lat["dense"]["ms"], "latency_ratio": lat["ours"]["ratio"],
            "tp_latency_ratio": lat["tp"]["ratio"], "max_abs_diff_shrunk_vs_masked": diff,
            "metric": wl.metric_name if trained else None, "dense_metric": metric["dense"],
            "shrunk_metric": metric["ours"], "tp_metric": metric["tp"],
        })
        rows[-1]["params_ratio_vs_tp"] = rows[-1]["params_ratio"] / rows[-1]["tp_params_ratio"]
    return {"amount": amount, "importance": "L1 group magnitude (ours: prune_structured; Torch-Pruning: "
            "MetaPruner + GroupMagnitudeImportance(p=1)), output layer kept, no fine-tuning",
            "inputs": "CNNs: random 3x32x32 images, seeded weights with per-channel BatchNorm statistics; "
            "digits-cnn: its trained weights and test split", "rows": rows}


SECTIONS = ("unstructured", "channels", "heads", "lottery", "vs-torch-pruning")


def run(sections: tuple[str, ...] = SECTIONS, extra: list[str] | None = None) -> dict:
    torch.set_num_threads(1)  # every number on one thread: latency as stated, training deterministic and unaffected
    res: dict = {"environment": environment()}
    steps = {"unstructured": ("unstructured_lenet300", unstructured_lenet), "channels": ("channels_digits_cnn", channels_cnn),
             "heads": ("heads_digits_vit", heads_vit), "lottery": ("lottery_ticket", lottery),
             "vs-torch-pruning": ("channels_vs_torch_pruning", lambda: channels_vs_torch_pruning(extra))}
    for name in sections:
        key, fn = steps[name]
        res[key] = fn()
    return res


def render(res: dict) -> str:
    out: list[str] = []
    if "unstructured_lenet300" in res:
        out += _render_1_to_4(res)
    if "channels_vs_torch_pruning" in res:
        out += ["", _render_vs_tp(res["channels_vs_torch_pruning"])]
    return "\n".join(out).strip("\n")


def _render_vs_tp(t: dict) -> str:
    head = (f"5. {t['amount']:.0%} of conv channels + shrink, ours vs Torch-Pruning MetaPruner ({t['importance']}); "
            f"{t['inputs']}; latency batch 32, 1 thread, median per-round ratio to dense over 9 interleaved rounds")
    cols = [("model", "model", ""), ("params", "params", ","), ("params_ratio", "params x", ".3f"),
            ("tp_params_ratio", "TP params x", ".3f"), ("params_ratio_vs_tp", "ours/TP", ".3f"),
            ("flops_ratio", "FLOPs x", ".3f"), ("tp_flops_ratio", "TP FLOPs x", ".3f"),
            ("latency_ms_b32", "dense ms", ".3f"), ("latency_ratio", "latency x", ".3f"),
            ("tp_latency_ratio", "TP latency x", ".3f"), ("max_abs_diff_shrunk_vs_masked", "|shrunk-masked|", ".1e"),
            ("dense_metric", "dense acc", ".4f"), ("shrunk_metric", "acc", ".4f"), ("tp_metric", "TP acc", ".4f")]
    return head + "\n" + table(t["rows"], cols) + ("\n(acc: the workload's metric on its test split before any "
                                                    "fine-tuning, for trained models; shared machine: compare ratios "
                                                    "from one run only)")


def _render_1_to_4(res: dict) -> list[str]:
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
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    p.add_argument("--workload", action="append", default=[], metavar="REF",
                   help="also run section 5 on this workload (file.py:attr, module:attr or a name; repeatable)")
    args = p.parse_args(argv)
    sections = tuple(args.only) if args.only else SECTIONS
    if 0 < len(set(sections) & {"unstructured", "channels", "heads", "lottery"}) < 4:
        p.error("--only: sections 1-4 print as one table set; give all of them or none")
    result = run(sections, args.workload)
    emit(result, args.json, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
