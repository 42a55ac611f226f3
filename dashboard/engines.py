"""Slower than fp32, and what is faster, on a page: the one line when a timed compressed model is slower, the
"Find a faster engine" job (``compression_core.faster.faster_path`` in a worker: the model, fp32 and every other
compressed path timed together) and its table; the "Time before vs after" job's payload and key (``latency``, in a
worker too); peak inference RAM at batch 1 and at the timed batch. Explore's
latency panel and the Advise page call these, so they show the same numbers the CLI prints.

Comparing engines is always a job on request (a button), never part of a slider move.
"""

from __future__ import annotations

import hashlib
import os

import pandas as pd
import streamlit as st

import jobs
import state
import store
import take_home
import techniques as T


def label_of(recipe: dict) -> str:
    """The steps in the words the library's line uses ("int8 static", "magnitude pruning + int8 dynamic")."""
    names = []
    for s in recipe.get("steps", []):
        t = T.by_kind(s.get("kind"))
        names.append(t.ui.label.split(" (")[0] if t is not None else str(s.get("kind")))
    return " + ".join(names) or "no steps"


def where(runtime: str, batch: int, threads: int) -> str:
    return f"in {runtime} at batch {batch}, {threads} thread{'s' if threads != 1 else ''}"


def slower_line(label: str, comparison: dict, batch: int, threads: int) -> str | None:
    """The one line for a before/after timing whose verdict is slower (None otherwise), before any engine
    comparison has run: the ratio, and where to find what is faster."""
    if comparison.get("verdict") != "slower":
        return None
    return (f"slower: {label} runs {comparison['ratio']:.1f}x slower than fp32 "
            f"{where(comparison.get('runtime', 'torch'), batch, threads)}; press 'Find a faster engine' to time the "
            "other compressed paths (ONNX Runtime QDQ and dynamic int8, MatMulNBits, torch) against it")


def payload(ref: str, recipe: dict, batch: int, threads: int, label: str | None = None) -> dict:
    """The ``faster`` job's payload: the recipe (and its bundle when its model was trained here)."""
    out: dict = {"model": ref, "recipe": recipe, "batch": int(batch), "threads": int(threads)}
    if label:
        out["label"] = label
    if take_home.trains(recipe) and state.is_applied(state.recipe_key(recipe)) and not take_home.heavy(recipe):
        out["bundle"] = take_home.bundle_of(recipe)
    return out


def latency_payload(ref: str, recipe: dict, batch: int, threads: int, runtimes: list[str]) -> dict:
    """The ``latency`` job's payload (Explore's "Time before vs after"): as the engines job's (the bundle when the
    model was trained here), the runtimes to time in, and a fresh nonce: each press is a new timing, never joined to
    an identical earlier job's result (the pool shares identical jobs, which suits deterministic results only)."""
    return {**payload(ref, recipe, batch, threads), "runtimes": list(runtimes), "nonce": os.urandom(8).hex()}


def latency_job_key(cfg: tuple) -> str:
    """The page's key of a ``latency`` job: one per configuration timed (recipe key, batch, threads, runtime)."""
    return "latency:" + hashlib.sha256(repr(cfg).encode()).hexdigest()[:16]


def show_result(res: dict) -> None:
    """A finished ``faster`` job: its one line (warning when slower), then every path timed."""
    if res.get("line"):
        st.warning(res["line"])
    else:
        st.success(res["summary"])
    rows = [{"path": p["path"], "ms": p["ms"], "x fp32 time": p["ratio"],
             "x fp32 file": p["size_ratio"], "agrees %": None if p["agreement"] is None else 100 * p["agreement"],
             "faster": bool(res.get("faster")) and p["path"] == res["faster"]["path"]}
            for p in [res["this"], *res["paths"]]]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={  # fits Explore's column
        "path": st.column_config.TextColumn("path", width=180, help="ORT = ONNX Runtime"),
        "ms": st.column_config.NumberColumn("ms", format="%.3f", width=55, help="median of the rounds"),
        "x fp32 time": st.column_config.NumberColumn("x time", format="%.2f", width=55,
                                                     help="time / fp32's time, per round, in the same run"),
        "x fp32 file": st.column_config.NumberColumn("x file", format="%.2f", width=55,
                                                     help="file size / fp32's file size"),
        "agrees %": st.column_config.NumberColumn("agrees %", format="%.0f", width=65,
                                                  help="top-1 agreement with fp32 on the first test items"),
        "faster": st.column_config.CheckboxColumn("named", width=55, help="the faster path the line names")})
    st.caption(f"fp32 {res['baseline_ms']:.3f} ms {where('torch', res['batch_size'], res['threads'])}; "
               f"{res['rounds']} interleaved rounds; a path counts when it takes at most fp32's time and agrees with "
               f"fp32 on at least {res.get('bar', res['min_agreement']) * 100:.0f} % of the first test items (90 %, "
               "or as well as the compressed model itself, less 5 points)."
               + (f" Not timed: {'; '.join(res['skipped'].values())}." if res.get("skipped") else ""))


def job_key(recipe: dict, batch: int, threads: int, label: str | None = None) -> str:
    """The page's key of a ``faster`` job (one per recipe, batch, threads and label)."""
    digest = hashlib.sha256(f"{state.recipe_key(recipe)}|{batch}|{threads}|{label}".encode()).hexdigest()[:16]
    return f"faster:{digest}"


def faster_panel(ref: str, recipe: dict, batch: int, threads: int, label: str | None = None,
                 button: str = "Find a faster engine", show: bool = True) -> dict | None:
    """The button that starts the ``faster`` job for ``recipe`` at ``batch``/``threads``, its progress, and its
    result once done (``show``: drawn here; always returned)."""
    data = payload(ref, recipe, batch, threads, label)
    res = jobs.job_panel("faster", data, job_key(recipe, batch, threads, label), store.browser_id(), label=button)
    if res is not None and show:
        show_result(res)
    return res


def slower_then_faster(ref: str, recipe: dict, batch: int, threads: int, lines: list[str]) -> dict | None:
    """The page's slower lines (``slower_line``) until the engines job has run, the job's button and progress, then
    the job's own line and table in their place (one line, not two)."""
    slot = st.container()
    res = faster_panel(ref, recipe, batch, threads, show=False)
    if res is None:
        for line in lines:
            slot.warning(line)
    else:
        show_result(res)
    return res


def peak_ram_rows(key: str, ref: str, batch: int) -> list[dict]:
    """Before and after: peak inference RAM in torch at batch 1 and at ``batch`` (``compression_core.peak_ram``)."""
    rows = []
    for lbl, k in (("before", None), ("after", key)):
        v = state.runtimes.peak_ram_view(k, ref, batch)
        row = {"runtime": "torch", "model": lbl, "peak RAM, batch 1": ram_text(v["b1"])}
        if batch != 1:
            row[f"peak RAM, batch {batch}"] = ram_text(v["batch"])
        rows.append(row)
    return rows


def ort_peak_ram_cells(key: str | None, ref: str, batch: int) -> dict:
    """The ONNX Runtime table's peak-RAM cells of the baseline (key None) or a result: batch 1 and ``batch``."""
    v = state.runtimes.ort_peak_ram_view(key, ref, batch)
    out = {"peak RAM, batch 1": ram_text(v["b1"])}
    if batch != 1:
        out[f"peak RAM, batch {batch}"] = ram_text(v["batch"])
    return out


def ram_text(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.2f} MB" if n >= 2**20 else f"{n / 1024:,.1f} KB"


__all__ = ["faster_panel", "job_key", "label_of", "ort_peak_ram_cells", "payload", "peak_ram_rows", "ram_text",
           "show_result", "slower_line", "slower_then_faster", "where"]
