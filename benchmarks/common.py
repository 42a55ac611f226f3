"""Shared helpers for benchmark scripts: argument parsing, one-thread timing, table printing."""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any, Sequence

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return p


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "quantized_engine": torch.backends.quantized.engine,
        "threads_for_latency": 1,
    }


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Render rows as a fixed-width text table; columns are (key, header, format spec)."""
    cells = [[format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (_, h, _) in enumerate(columns)]
    out = ["  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


_T0 = None


def progress(message: str) -> None:
    """One line of progress on stderr with the seconds elapsed (benchmarks never sit silent for a minute)."""
    import sys
    import time

    global _T0
    if _T0 is None:
        _T0 = time.perf_counter()
    print(f"[{time.perf_counter() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(result, indent=2) if as_json else text)
