"""The ``search`` command, and the ``--executor``/``--ray-address`` flags the ``sensitivity`` command shares.

    python -m compression_core search --model REF --trials N [--objectives accuracy,size[,latency]]
        [--max-size-bytes B] [--max-drop PT] [--max-ram-bytes B] [--executor local|ray] [--ray-address ADDR] [--seed S] [--json]
        [--out DIR]

Progress goes to stderr, one line per trial. ``--out DIR`` writes every front point as a recipe file
(``front-01.yaml`` ..., smallest file first) and ``summary.json``, each atomically, only after the search
finished. Bad input (a bad constraint, an unreachable Ray address, a missing ray package) is one line, exit 2, and
nothing is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import yaml

from .errors import CompressionError, OneLineParser
from .io import atomic_write_bytes
from .search import search
from .executors import sensitivity_sweep
from .workload import metric_loss


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """``--executor local|ray`` and ``--ray-address ADDR`` (search and sensitivity)."""
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="run trials in this process (local, default) or as Ray tasks (ray)")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="Ray cluster to connect to (host:port, ray://host:port or auto); default with --executor ray: "
                        "a local Ray runtime on 127.0.0.1")


def add_search_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``search`` on the CLI's subparsers (its ``func`` is ``run_search``)."""
    s = subparsers.add_parser("search", help="search recipes for the best accuracy / file size trade-offs (a Pareto "
                                             "front), locally or on a Ray cluster")
    s.add_argument("--model", required=True, metavar="REF",
                   help="workload: a registered name (see `models`), path/to/file.py:attr or package.module:attr")
    s.add_argument("--trials", required=True, type=str, metavar="N",
                   help="recipes to evaluate, the seeded uniform settings and budget fits included")
    s.add_argument("--objectives", default="accuracy,size", metavar="LIST",
                   help="accuracy,size (default), plus latency (1 thread, batch 1) and/or ram (peak inference RAM, "
                        "batch 1), e.g. accuracy,size,ram")
    s.add_argument("--max-size-bytes", type=str, default=None, metavar="B", help="only files of at most B bytes")
    s.add_argument("--max-drop", type=str, default=None, metavar="PT",
                   help="only points at most PT metric points below the baseline (for a lower-is-better metric "
                        "such as perplexity: at most PT percent above it)")
    s.add_argument("--max-ram-bytes", type=str, default=None, metavar="B",
                   help="only models whose peak inference RAM (weights + input + activations, batch 1) is at most B "
                        "bytes")
    add_executor_arguments(s)
    s.add_argument("--seed", type=str, default="0", metavar="S", help="sampler seed (default 0): same seed, same front")
    s.add_argument("--json", action="store_true", help="print one JSON object: model, baseline, trials, seconds, "
                                                       "executor, front")
    s.add_argument("--out", metavar="DIR", default=None,
                   help="write every front point as a recipe file plus summary.json (atomically)")
    s.set_defaults(func=run_search)
    return s


def _int(value: str | None, flag: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise CompressionError(f"{flag}: must be an integer, got {value!r}") from None
    if not low <= n <= high:
        raise CompressionError(f"{flag}: must be {low}..{high}, got {n}")
    return n


def _float(value: str | None, flag: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    try:
        x = float(str(value).strip())
    except ValueError:
        raise CompressionError(f"{flag}: must be a number, got {value!r}") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise CompressionError(f"{flag}: must be {low:g}..{high:g} points, got {value}")
    return x


def _check_out(out: str | None) -> Path | None:
    """The --out folder, refused before the search if it is a file or cannot be created."""
    if out is None:
        return None
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise CompressionError(f"--out: {out!r} exists and is not a directory")
    parent = p if p.exists() else next((q for q in p.parents if q.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise CompressionError(f"--out: cannot write in {str(parent)!r}")
    return p


def _progress_line(frac: float, msg: str) -> None:
    sys.stderr.write(f"[search {frac * 100:5.1f}%] {msg}\n")
    sys.stderr.flush()


def write_front(result, out: Path) -> list[Path]:
    """Every front point as ``front-NN.yaml`` (smallest file first) and ``summary.json``, each written atomically."""
    paths = []
    summary = result.summary()
    for i, p in enumerate(result.front, start=1):
        path = out / f"front-{i:02d}.yaml"
        recipe = dict(p.recipe)
        recipe["description"] = (f"found by search (seed {result.seed}, trial {p.trial}, {p.origin}): "
                                 f"{result.metric} {p.accuracy:.4f}, {p.size_bytes} bytes ({p.size_kind} file, "
                                 f"{p.size_ratio:.3f}x of {result.baseline['size_bytes']})"
                                 + (f", {p.latency_ms:.3f} ms" if p.latency_ms is not None else ""))
        atomic_write_bytes(path, yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).encode("utf-8"))
        summary["front"][i - 1]["file"] = path.name
        paths.append(path)
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return paths + [out / "summary.json"]


def run_search(args: argparse.Namespace) -> int:
    """The ``search`` command: returns the exit code (CompressionError propagates: the caller prints it, exit 2)."""
    trials = _int(args.trials, "--trials", 1, 100_000)
    max_size = _int(args.max_size_bytes, "--max-size-bytes", 1, 2**62)
    max_drop = _float(args.max_drop, "--max-drop", 0.0, 100.0)
    max_ram = _int(getattr(args, "max_ram_bytes", None), "--max-ram-bytes", 1, 2**62)
    seed = _int(args.seed, "--seed", 0, 2**31 - 1)
    objectives = [o.strip() for o in str(args.objectives).split(",") if o.strip()]
    out = _check_out(args.out)
    if args.executor != "ray" and args.ray_address:
        raise CompressionError("--ray-address: only with --executor ray")
    try:
        result = search(args.model, trials=trials, objectives=objectives, max_size_bytes=max_size,
                        max_drop=max_drop, executor=args.executor, ray_address=args.ray_address, seed=seed,
                        progress=_progress_line, max_ram_bytes=max_ram)
    except CompressionError as e:
        msg = str(e)
        for field, flag in (("trials:", "--trials:"), ("objectives:", "--objectives:"),
                            ("max_size_bytes:", "--max-size-bytes:"), ("max_drop:", "--max-drop:"),
                            ("max_ram_bytes:", "--max-ram-bytes:")):
            if msg.startswith(field):
                msg = flag + msg[len(field):]
        raise CompressionError(msg) from None
    if out is not None:
        write_front(result, out)
    if args.json:
        print(json.dumps(result.to_json_dict(), indent=2))
        return 0
    base = result.baseline
    pct = base.get("percent", True)

    def shown(v: float) -> str:
        return f"{v * 100:.2f}%" if pct else f"{v:.4g}"

    unit = "drop pt" if result.higher_is_better else "rise %"
    print(f"model     {result.model} ({result.metric}, {'higher' if result.higher_is_better else 'lower'} is "
          f"better); baseline {shown(base['accuracy'])}, "
          f"{base['size_bytes']:,} bytes")
    print(f"search    {result.trials} trials ({result.failed} failed) in {result.seconds:.1f} s, executor "
          f"{result.executor}, seed {result.seed}; first front point after "
          f"{result.first_point_seconds or 0:.1f} s")
    print(f"\n{'#':>3} {'trial':>5}  {'origin':<10}{result.metric:>10}{unit:>9}{'bytes':>11}{'ratio':>8}"
          f"{'latency ms':>12}{'peak RAM':>12}  settings")
    for i, p in enumerate(result.front, start=1):
        sp = p.settings["sparsity"]
        lat = f"{p.latency_ms:.3f}" if p.latency_ms is not None else "-"
        settings = (f"{p.settings['method']}; sparsity " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in sp.items()))
        if p.settings.get("structured"):
            settings += f"; structured {p.settings['structured'] * 100:.0f}%"
        ram = f"{p.peak_ram_bytes / 1024:,.1f} KB" if p.peak_ram_bytes is not None else "-"
        loss = metric_loss(result.higher_is_better, base["accuracy"], p.accuracy)
        print(f"{i:>3} {p.trial:>5}  {p.origin:<10}{shown(p.accuracy):>10}{loss:>9.2f}"
              f"{p.size_bytes:>11,}{p.size_ratio:>7.3f}x{lat:>12}{ram:>12}  {settings[:80]}")
    if out is not None:
        print(f"\nwrote {len(result.front)} recipes and summary.json to {out}")
    return 0


def sweep_from_args(args: argparse.Namespace):
    """The ``sensitivity`` command's sweep with ``--executor``/``--ray-address`` (a Sensitivity, same curves as
    the local sweep)."""
    executor = getattr(args, "executor", "local") or "local"
    address = getattr(args, "ray_address", None)
    if executor != "ray" and address:
        raise CompressionError("--ray-address: only with --executor ray")
    return sensitivity_sweep(args.model, args.technique, executor=executor, ray_address=address,
                             include_classifier=getattr(args, "include_classifier", False))


def main(argv=None) -> int:
    """``python -m compression_core.search_cli ...``: the search command alone (before the main CLI registers it)."""

    p = OneLineParser(prog="python -m compression_core")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_search_parser(sub)
    try:
        args = p.parse_args(argv)
        return int(args.func(args))
    except CompressionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
