"""ONNX Runtime on request: whether it is installed, a result's size and metric exported to ONNX, and peak inference
RAM at a chosen batch. (Baseline vs compressed latency is timed in a worker process: the ``latency`` job,
``jobs.run_latency``.)"""

from __future__ import annotations

import streamlit as st

from compression_core import inputs as I
from compression_core.measure import peak_ram_pair

from .results import model_of
from .workloads import baseline

RUNTIMES = ("torch", "ONNX Runtime")


def ort_module():
    """``compression_core.ort`` (ONNX Runtime measurement) if onnxruntime is installed, else None."""
    try:
        import onnxruntime  # noqa: F401

        from compression_core import ort
    except ImportError:
        return None
    return ort


@st.cache_data(show_spinner=False, max_entries=64)
def peak_ram_view(key: str | None, ref: str, batch: int) -> dict:
    """Peak inference RAM in bytes of the baseline (key None) or a recipe's result in torch (an ONNX Runtime model
    as its graph), at batch 1 and at ``batch``: {b1, batch} (None where the model cannot be followed op by op)."""
    big, b1 = peak_ram_pair(model_of(key, ref), baseline(ref).test.x, int(batch))
    return {"b1": b1, "batch": big}


@st.cache_data(show_spinner=False, max_entries=64)
def ort_peak_ram_view(key: str | None, ref: str, batch: int) -> dict:
    """Peak inference RAM in bytes of the baseline (key None) or a recipe's result deployed in ONNX Runtime (the
    graph ``measure_ort`` runs), at batch 1 and at ``batch``: {b1, batch}."""
    wl = baseline(ref)
    blob = ort_module().deploy_proto(model_of(key, ref), I.head(wl.test.x, 2)).SerializeToString()
    big, b1 = peak_ram_pair(blob, wl.test.x, int(batch))
    return {"b1": b1, "batch": big}


@st.cache_data(show_spinner=False, max_entries=64)
def ort_view(key: str | None, ref: str) -> dict:
    """Size and accuracy of the baseline (key None) or a recipe's result exported to ONNX, in ONNX Runtime."""
    stats = ort_module().measure_ort(model_of(key, ref), baseline(ref), name=baseline(ref).name, with_latency=False)
    return {k: v for k, v in stats.model_dump().items() if k != "layers"}
