"""Plotly figures for the dashboard: every chart has a title, axis units and a legend where colours mean something.

Pure functions from measured data (dicts of ModelStats, numpy arrays) to figures; no Streamlit, no torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

BEFORE = "#7f8c8d"  # baseline: grey
AFTER = "#1f77b4"  # compressed: blue
SIMULATED = "#ff7f0e"  # simulated / theoretical: orange
_LAYOUT = dict(margin=dict(l=50, r=20, t=50, b=40), height=320, legend=dict(orientation="h", y=-0.22))


def _fig(title: str, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, x=0.0), **{**_LAYOUT, **layout})
    return fig


def size_rows(stats: dict, label: str) -> list[dict]:
    """The sizes of one ModelStats dict worth showing: dense file always, then the ones that differ."""
    rows = [{"model": label, "kind": "dense file (torch.save)", "KB": stats["size_bytes"] / 1024}]
    if stats.get("sparse_size_bytes") is not None:
        rows.append({"model": label, "kind": "sparse-encoded / packed file", "KB": stats["sparse_size_bytes"] / 1024})
    if stats.get("theoretical_size_bytes") is not None:
        rows.append({"model": label, "kind": "theoretical, simulated (bits x params)",
                     "KB": stats["theoretical_size_bytes"] / 1024})
    return rows


def size_chart(before: dict, after: dict | None) -> go.Figure:
    """Grouped bars of file sizes in KB, before vs after; simulated sizes are orange and say so."""
    rows = size_rows(before, "before") + (size_rows(after, "after") if after else [])
    fig = _fig("Model size (KB)", yaxis_title="size (KB)", barmode="group")
    colors = {"dense file (torch.save)": AFTER, "sparse-encoded / packed file": "#2ca02c",
              "theoretical, simulated (bits x params)": SIMULATED}
    for kind in colors:
        sub = [r for r in rows if r["kind"] == kind]
        if not sub:
            continue
        fig.add_bar(
            name=kind, x=[r["model"] for r in sub], y=[r["KB"] for r in sub],
            text=[f"{r['KB']:.1f} KB" for r in sub], textposition="outside",
            marker_color=colors[kind],
        )
    fig.update_yaxes(rangemode="tozero")
    return fig


def accuracy_chart(before: dict, after: dict | None) -> go.Figure:
    """Test accuracy in %, before vs after (y axis zoomed near the values so small drops are visible)."""
    labels = ["before"] + (["after"] if after else [])
    vals = [before["accuracy"] * 100] + ([after["accuracy"] * 100] if after else [])
    sim = bool(after and after.get("simulated"))
    fig = _fig("Test accuracy (%)" + (", after: simulated" if sim else ""), yaxis_title="accuracy (%)")
    fig.add_bar(name="test accuracy", x=labels, y=vals, text=[f"{v:.2f} %" for v in vals], textposition="outside",
                marker_color=[BEFORE, SIMULATED if sim else AFTER][: len(vals)], showlegend=False)
    lo = max(0.0, min(vals) - 10)
    fig.update_yaxes(range=[lo, 101])
    return fig


def latency_chart(series: dict[str, tuple[dict | None, dict | None]], batch: int, threads: int) -> go.Figure:
    """Median latency in ms with IQR error bars, before vs after, one bar group per runtime."""
    fig = _fig(f"Latency (ms, median; batch {batch}, {threads} thread{'s' if threads > 1 else ''})",
               yaxis_title="latency (ms)", barmode="group")
    colors = {"before": BEFORE, "after": AFTER}
    for label in ("before", "after"):
        xs, ys, err = [], [], []
        for runtime, pair in series.items():
            s = pair[0] if label == "before" else pair[1]
            if s and s.get("latency_ms") is not None:
                xs.append(runtime)
                ys.append(s["latency_ms"])
                err.append(s.get("latency_iqr_ms") or 0.0)
        if xs:
            fig.add_bar(name=label, x=xs, y=ys, error_y=dict(type="data", array=err, visible=True),
                        text=[f"{v:.3f} ms" for v in ys], textposition="outside", marker_color=colors[label])
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(title_text="runtime", type="category")
    return fig


def layer_chart(before_layers: Sequence[dict], after_layers: Sequence[dict] | None) -> go.Figure:
    """Per-layer sparsity (%) bars with bits per weight on a second axis."""
    fig = _fig("Per-layer sparsity (%) and bits per weight", yaxis_title="sparsity (%)",
               yaxis2=dict(title="bits per weight", overlaying="y", side="right", range=[0, 34], dtick=8,
                            showgrid=False))
    layers = list(after_layers if after_layers is not None else before_layers)
    names = [r["name"] for r in layers]
    fig.add_bar(name="sparsity after (%)", x=names, y=[r["sparsity"] * 100 for r in layers], marker_color=AFTER)
    bits = [r["bits"] for r in layers]
    sim = [r.get("simulated", False) for r in layers]
    fig.add_scatter(name="bits per weight (orange = simulated)", x=names, y=bits, yaxis="y2", mode="markers+lines",
                    marker=dict(size=10, color=[SIMULATED if s else "#d62728" for s in sim]), line=dict(color="#d62728"))
    fig.update_yaxes(range=[0, 100], selector=dict(title_text="sparsity (%)"))
    fig.update_xaxes(title_text="layer")
    return fig


def weight_histogram(before: np.ndarray, after: np.ndarray | None, layer: str, bins: int = 80) -> go.Figure:
    """Overlaid histograms of one layer's weights; a count of exact zeros and distinct values in the legend."""
    log = before.size > 2000  # big layers: a log axis shows the spike of zeros and the tails together
    fig = _fig(f"Weights of {layer}: before vs after", xaxis_title="weight value",
               yaxis_title="count (log scale)" if log else "count", barmode="overlay")
    lo = float(min(before.min(), after.min() if after is not None else before.min()))
    hi = float(max(before.max(), after.max() if after is not None else before.max()))
    edges = np.linspace(lo, hi + 1e-9, bins + 1)
    for label, w, color in (("before", before, BEFORE), ("after", after, AFTER)):
        if w is None:
            continue
        zeros = int((w == 0).sum())
        distinct = len(np.unique(w))
        fig.add_histogram(name=f"{label}: {zeros:,} zeros of {w.size:,}, {distinct:,} distinct values", x=w.ravel(),
                          xbins=dict(start=edges[0], end=edges[-1], size=edges[1] - edges[0]),
                          marker_color=color, opacity=0.6)
    if log:
        fig.update_yaxes(type="log")
    return fig


def per_class_chart(before_cm: np.ndarray, after_cm: np.ndarray | None, class_names: Sequence[str]) -> go.Figure:
    """Per-class test accuracy (%), before vs after, from confusion matrices (rows = true class)."""
    fig = _fig("Per-class test accuracy (%)", xaxis_title="true class", yaxis_title="accuracy (%)", barmode="group")
    for label, cm, color in (("before", before_cm, BEFORE), ("after", after_cm, AFTER)):
        if cm is None:
            continue
        acc = np.diag(cm) / np.maximum(cm.sum(1), 1) * 100
        fig.add_bar(name=label, x=list(class_names), y=acc, marker_color=color)
    fig.update_yaxes(range=[0, 101])
    fig.update_xaxes(type="category")
    return fig


def confusion_chart(cm: np.ndarray, class_names: Sequence[str], title: str) -> go.Figure:
    """A confusion matrix heatmap (counts; rows = true class, columns = predicted)."""
    fig = _fig(title, xaxis_title="predicted class", yaxis_title="true class", height=360)
    fig.add_heatmap(z=cm, x=list(class_names), y=list(class_names), colorscale="Blues", text=cm,
                    texttemplate="%{text}", colorbar=dict(title="count"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def pareto_chart(df: pd.DataFrame, x: str, x_title: str, title: str, highlight: Sequence[int] = ()) -> go.Figure:
    """Accuracy vs ``x`` for every experiment, the Pareto front (lower x, higher accuracy) drawn, baseline starred."""
    fig = _fig(title, xaxis_title=x_title, yaxis_title="accuracy (%)", height=380)
    d = df.dropna(subset=[x])
    base = d[d["baseline"]]
    rest = d[~d["baseline"]]
    for model, g in rest.groupby("model"):
        fig.add_scatter(name=f"{model} (compressed)", x=g[x], y=g["accuracy_%"], mode="markers",
                        marker=dict(size=10, symbol=["diamond-open" if s else "circle" for s in g["simulated"]]),
                        text=g["label"], hovertemplate="%{text}<br>%{x:.2f}, %{y:.2f} %<extra></extra>")
    if len(base):
        fig.add_scatter(name="baseline (uncompressed)", x=base[x], y=base["accuracy_%"], mode="markers",
                        marker=dict(size=16, symbol="star", color="gold", line=dict(color="black", width=1)),
                        text=base["label"], hovertemplate="%{text}<br>%{x:.2f}, %{y:.2f} %<extra></extra>")
    front = pareto_front(d, x)
    if len(front) > 1:
        fig.add_scatter(name="Pareto front", x=front[x], y=front["accuracy_%"], mode="lines",
                        line=dict(dash="dash", color="black"), hoverinfo="skip")
    hi = d[d["id"].isin(list(highlight))]
    if len(hi):
        fig.add_scatter(name="selected rows", x=hi[x], y=hi["accuracy_%"], mode="markers",
                        marker=dict(size=20, symbol="circle-open", color="red", line=dict(width=2)), hoverinfo="skip")
    return fig


def pareto_front(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """Rows no other row beats on both ``x`` (lower is better) and accuracy (higher is better), sorted by ``x``."""
    d = df.dropna(subset=[x]).sort_values([x, "accuracy_%"], ascending=[True, False])
    keep, best = [], -np.inf
    for idx, row in d.iterrows():
        if row["accuracy_%"] > best:
            keep.append(idx)
            best = row["accuracy_%"]
    return d.loc[keep]


# ------------------------------------------------------------------------------------------------ Learn
def learn_prune_histogram(before: np.ndarray, after: np.ndarray) -> go.Figure:
    """A layer's weight histogram: weights the pruned model kept (blue) and those it set to zero (red)."""
    zero = after == 0
    kept, pruned = before[~zero], before[zero]
    frac = zero.mean() * 100
    fig = _fig(f"Weights of one layer: {frac:.0f} % set to zero (red)", xaxis_title="weight value (before pruning)",
               yaxis_title="count", barmode="overlay")
    size = float(before.max() - before.min()) / 80 or 1e-3
    fig.add_histogram(name=f"kept ({kept.size:,})", x=kept, xbins=dict(size=size), marker_color=AFTER)
    fig.add_histogram(name=f"pruned to zero ({pruned.size:,})", x=pruned, xbins=dict(size=size),
                      marker_color="#d62728", opacity=0.75)
    return fig


def learn_quant_levels(x: np.ndarray, q: np.ndarray, bits: int) -> go.Figure:
    """A smooth signal and its n-bit quantized version: the staircase of 2^n levels."""
    fig = _fig(f"{bits}-bit quantization: {2 ** bits:,} levels", xaxis_title="input index", yaxis_title="value")
    fig.add_scatter(name="fp32 value", x=np.arange(len(x)), y=x, mode="lines", line=dict(color=BEFORE))
    fig.add_scatter(name=f"quantized to {bits} bits", x=np.arange(len(q)), y=q, mode="lines",
                    line=dict(color=AFTER, shape="hv"))
    return fig


def learn_softmax(logits: np.ndarray, temperature: float, class_names: Sequence[str]) -> go.Figure:
    """Softmax of one set of logits at T = 1 and at the chosen temperature."""
    fig = _fig(f"Soft targets: softmax(logits / T), T = {temperature:g}", xaxis_title="class",
               yaxis_title="probability", barmode="group")
    for t, color in ((1.0, BEFORE), (temperature, AFTER)):
        z = logits / t
        p = np.exp(z - z.max())
        p /= p.sum()
        fig.add_bar(name=f"T = {t:g}", x=list(class_names), y=p, marker_color=color)
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1])
    return fig


def learn_dtype_errors(rows: Sequence[dict]) -> go.Figure:
    """Max absolute error of one tensor cast to each data type (log scale)."""
    fig = _fig("Max absolute error after casting the tensor", xaxis_title="data type", yaxis_title="max |error| (log)")
    fig.add_bar(name="max |error|", x=[r["dtype"] for r in rows], y=[max(r["max_abs_error"], 1e-12) for r in rows],
                text=[f"{r['max_abs_error']:.2e}" for r in rows], textposition="outside", marker_color=AFTER,
                showlegend=False)
    fig.update_yaxes(type="log")
    return fig
