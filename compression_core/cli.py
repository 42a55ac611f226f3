"""``python -m compression_core``: list the sample models and measure them (later: apply recipes).

Bad input prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import CompressionError
from .measure import ModelStats


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every bad argument is one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CompressionError(f"{self.prog}: {message}")


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f} KB"


def render_stats(s: ModelStats) -> str:
    """A readable table of one ModelStats."""
    lines = [
        f"model            {s.model}",
        f"params           {s.params:,} ({s.nonzero_params:,} non-zero)",
        f"size             {_fmt_bytes(s.size_bytes)} ({s.size_bytes:,} bytes serialized state_dict)",
    ]
    if s.sparse_size_bytes is not None:
        lines.append(f"sparse-encoded   {_fmt_bytes(s.sparse_size_bytes)}")
    if s.theoretical_size_bytes is not None:
        lines.append(f"theoretical      {_fmt_bytes(s.theoretical_size_bytes)} (simulated: bits x params)")
    lat = "-" if s.latency_ms is None else f"{s.latency_ms:.3f} ms (median of {s.latency_runs} runs)"
    lines += [
        f"latency          {lat}, batch {s.batch_size}, {s.threads} thread(s)",
        f"accuracy         {s.accuracy * 100:.2f} % (test split)",
        f"FLOPs            {s.flops:,} per sample ({s.nonzero_flops:,} if zeros were skipped)",
        "",
        f"{'layer':<24}{'type':<18}{'params':>10}{'nonzero':>10}{'sparsity':>10}  {'dtype':<9}{'bits':>4}",
    ]
    for layer in s.layers:
        lines.append(
            f"{layer.name:<24}{layer.type:<18}{layer.params:>10,}{layer.nonzero:>10,}{layer.sparsity * 100:>9.1f}%"
            f"  {layer.dtype:<9}{layer.bits:>4}{' (simulated)' if layer.simulated else ''}"
        )
    return "\n".join(lines)


def _cmd_models(args: argparse.Namespace) -> int:
    import sample_models

    rows = []
    for name in sample_models.MODEL_NAMES:
        i = sample_models.info(name)
        meta = sample_models.load(name).trained
        rows.append({
            "name": name, "task": i.task, "architecture": i.architecture, "dataset": i.dataset,
            "input_shape": list(i.input_shape), "classes": i.num_classes, "classifier": i.classifier,
            "baseline_accuracy": meta.get("test_accuracy"),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'model':<16}{'accuracy':>9}  {'architecture':<40}task")
        for r in rows:
            print(f"{r['name']:<16}{r['baseline_accuracy'] * 100:>8.2f}%  {r['architecture']:<40}{r['task']}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    import sample_models

    from .measure import measure

    if args.model is None:
        raise CompressionError("measure: give --model NAME (one of " + ", ".join(sample_models.MODEL_NAMES) + ")")
    sm = sample_models.load(args.model)
    stats = measure(sm.model, sm.data, name=args.model, batch_size=args.batch_size, threads=args.threads)
    print(json.dumps(stats.to_json_dict(), indent=2) if args.json else render_stats(stats))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m compression_core", description="Compression Lab: compress and measure models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("models", help="list the bundled sample models")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(func=_cmd_models)

    me = sub.add_parser("measure", help="measure a sample model: size, latency, accuracy, FLOPs, layers")
    me.add_argument("--model", help="sample model name (see `models`)")
    me.add_argument("--batch-size", type=int, default=1, help="batch size for latency (default 1)")
    me.add_argument("--threads", type=int, default=1, help="intra-op threads for latency (default 1)")
    me.add_argument("--json", action="store_true", help="print one JSON object")
    me.set_defaults(func=_cmd_measure)
    return p


def _check_args(args: argparse.Namespace) -> None:
    import sample_models

    if getattr(args, "model", None) is not None:
        sample_models.info(args.model)  # one-line error naming the valid names
    if getattr(args, "batch_size", 1) < 1 or getattr(args, "batch_size", 1) > 4096:
        raise CompressionError(f"--batch-size: must be 1..4096, got {args.batch_size}")
    if getattr(args, "threads", 1) < 1 or getattr(args, "threads", 1) > 256:
        raise CompressionError(f"--threads: must be 1..256, got {args.threads}")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _check_args(args)
        return int(args.func(args))
    except CompressionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
