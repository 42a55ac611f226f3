"""One trial of a search or sweep: a recipe applied to a workload and measured on 1 intra-op thread, as plain data
(what the executors run, locally or as a Ray task), and the size of the file a compressed model ships as."""

from __future__ import annotations

import time

from .errors import CompressionError
from .recipe import apply_recipe
from .sensitivity import intra_op_threads
from .workload import resolve_workload


def shipped_size(stats) -> tuple[int, str]:
    """(bytes, kind) of the file a compressed model ships as: the sparse-encoded file (``sparse_size_bytes``, what
    ``fit_budget`` counts for pruning) when it is smaller than the dense ``torch.save`` file, else the dense file."""
    sparse = getattr(stats, "sparse_size_bytes", None)
    if sparse is not None and sparse < stats.size_bytes:
        return int(sparse), "sparse"
    return int(stats.size_bytes), "dense"


def evaluate_recipe(ref: str, payload: dict) -> dict:
    """Apply one recipe to the workload ``ref`` names (rebuilt from its reference, cached per process) and measure
    it on 1 intra-op thread. Returns plain data; a recipe the model cannot take is ``{"error": line}``. This is
    what the executors run (locally or as a Ray task)."""
    t0 = time.perf_counter()
    try:
        with intra_op_threads(1):
            wl = resolve_workload(ref)
            res = apply_recipe(payload["recipe"], workload=wl, measure_before=False,
                               with_latency=bool(payload.get("latency")), threads=1)
    except CompressionError as e:
        return {"error": str(e)}
    a = res.after
    size, kind = shipped_size(a)
    return {"accuracy": float(a.accuracy), "metric": a.metric, "higher_is_better": a.higher_is_better,
            "size_bytes": size, "size_kind": kind,
            "dense_size_bytes": int(a.size_bytes), "sparse_size_bytes": a.sparse_size_bytes,
            "latency_ms": a.latency_ms, "peak_ram_bytes": a.peak_ram_bytes, "seconds": time.perf_counter() - t0}


__all__ = ["evaluate_recipe", "shipped_size"]
