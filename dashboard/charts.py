"""Plotly figures for the dashboard: every chart has a title, axis units and a legend where colours mean something.

Pure functions from measured data (dicts of ModelStats, numpy arrays) to figures; no Streamlit, no torch.

The figures are plain data (``Fig``: a dict with plotly's ``data`` / ``layout``), not ``plotly.graph_objects``:
building a graph_objects figure validates every property and cost 12-38 ms per chart on this machine, most of a
slider move's server time; these are the same JSON plotly.js draws, built in well under a millisecond. ``Fig``
keeps the graph_objects methods the builders use (``add_bar``, ``update_layout``, magic underscores such as
``yaxis_title``) and attribute access for reading (``fig.data[0].text``, ``fig.layout.title.text``).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

BEFORE = "#7f8c8d"  # baseline: grey
AFTER = "#1f77b4"  # compressed: blue
SIMULATED = "#ff7f0e"  # simulated / theoretical: orange
# A horizontal legend at the bottom of the whole figure ("container"), under the x-axis title: placed at a fraction of
# the plot's height below it (y=-0.22), it sat on the axis title in the narrow Explore columns at 1280 px.
LEGEND_BELOW = dict(orientation="h", yref="container", y=0, yanchor="bottom")
_LAYOUT = dict(margin=dict(l=50, r=20, t=50, b=40), height=320, legend=LEGEND_BELOW)
_KEEP = {"error_x", "error_y"}  # property names that contain an underscore themselves


class _Obj(dict):
    """A dict read like a plotly object: ``o.name``; an unset property reads as None."""

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key.startswith("to_"):  # not a property: encoders probe for to_plotly_json
            raise AttributeError(key)
        try:
            return _wrap(self[key])
        except KeyError:
            return None


def _wrap(v: Any) -> Any:
    if isinstance(v, dict) and not isinstance(v, _Obj):
        return _Obj(v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


def _merge(into: dict, changes: dict) -> dict:
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
    return into


def _nested(props: dict) -> dict:
    """plotly's magic underscores: ``yaxis_title="x"`` -> {"yaxis": {"title": {"text": "x"}}}."""
    out: dict = {}
    for key, value in props.items():
        path = [key] if key in _KEEP else key.split("_")
        if path[-1] == "title" and isinstance(value, str):
            value = {"text": value}
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
            _merge(node[path[-1]], value)
        else:
            node[path[-1]] = value
    for k, v in list(out.items()):  # title given as a plain string at the top level too
        if k in ("title",) and isinstance(v, str):
            out[k] = {"text": v}
        if isinstance(v, dict) and isinstance(v.get("title"), str):
            v["title"] = {"text": v["title"]}
    return out


class Fig(_Obj):
    """A plotly figure as plain data ({"data": [...], "layout": {...}}) with the graph_objects methods used here."""

    def __init__(self, **layout: Any) -> None:
        super().__init__(data=[], layout=_Obj())
        self.update_layout(**layout)

    def update_layout(self, **props: Any) -> "Fig":
        _merge(self["layout"], _nested(props))
        return self

    def update_xaxes(self, selector: dict | None = None, **props: Any) -> "Fig":
        _merge(self["layout"].setdefault("xaxis", {}), _nested(props))
        return self

    def update_yaxes(self, selector: dict | None = None, **props: Any) -> "Fig":
        _merge(self["layout"].setdefault("yaxis", {}), _nested(props))
        return self

    def _add(self, kind: str, props: dict) -> "Fig":
        trace = _Obj(type=kind)
        for k, v in _nested(props).items():
            trace[k] = v.tolist() if isinstance(v, (np.ndarray, pd.Series, pd.Index)) else v
        self["data"].append(trace)
        return self

    def add_bar(self, **props: Any) -> "Fig":
        return self._add("bar", props)

    def add_scatter(self, **props: Any) -> "Fig":
        return self._add("scatter", props)

    def add_heatmap(self, **props: Any) -> "Fig":
        return self._add("heatmap", props)

    def add_annotation(self, **props: Any) -> "Fig":
        self["layout"].setdefault("annotations", []).append(_nested(props))
        return self

    def add_vline(self, x: float, **props: Any) -> "Fig":
        line = _nested(props).get("line", {})
        self["layout"].setdefault("shapes", []).append(
            {"type": "line", "x0": x, "x1": x, "xref": "x", "y0": 0, "y1": 1, "yref": "paper", "line": line})
        return self

    def to_dict(self) -> dict:
        return self

    def to_json(self) -> str:
        return json.dumps(self, default=_json_default)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, pd.Series):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _fig(title: str, **layout) -> Fig:
    fig = Fig(**{**_LAYOUT, **layout})
    fig.update_layout(title=dict(text=title, x=0.0))
    return fig


SIZE_KINDS = {  # row key in ModelStats -> what the bar is called
    "size_bytes": "dense file",
    "sparse_size_bytes": "sparse / packed",
    "theoretical_size_bytes": "simulated bits",
}


def size_rows(stats: dict, label: str) -> list[dict]:
    """The sizes of one ModelStats dict worth showing: dense file always, then the ones that exist."""
    return [{"model": label, "kind": kind, "KB": stats[k] / 1024}
            for k, kind in SIZE_KINDS.items() if k == "size_bytes" or stats.get(k) is not None]


def size_chart(before: dict, after: dict | None) -> Fig:
    """File sizes in KB as horizontal bars, one pair (before grey, after blue; orange when simulated) per kind of
    file: every label sits at the end of its own bar, so two numbers can never run into each other however narrow
    the column is."""
    fig = _fig("Model size (KB)", xaxis_title="size (KB)", barmode="group", bargap=0.25,
               margin=dict(l=110, r=30, t=50, b=40), legend=dict(LEGEND_BELOW, traceorder="normal"))
    sim = bool(after and after.get("simulated"))
    for label, stats, color in (("before", before, BEFORE), ("after", after, SIMULATED if sim else AFTER)):
        if stats is None:
            continue
        rows = size_rows(stats, label)
        fig.add_bar(name=label, y=[r["kind"] for r in rows], x=[r["KB"] for r in rows], orientation="h",
                    text=[f"{r['KB']:,.1f}" for r in rows], textposition="outside", cliponaxis=False,
                    marker_color=color, hovertemplate=f"{label}: %{{x:,.1f}} KB<extra>%{{y}}</extra>")
    top = max([r["KB"] for s_ in (before, after) if s_ for r in size_rows(s_, "")])
    fig.update_xaxes(range=[0, top * 1.3])
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def accuracy_chart(before: dict, after: dict | None, metric: str = "accuracy", percent: bool = True,
                   higher_is_better: bool = True) -> Fig:
    """The workload's metric on the test split (in % for fractions), before vs after, bars from 0 (a zoomed axis
    would make a small drop look huge); the change is written on the after bar and in the subtitle. A
    lower-is-better metric (perplexity) says so in its titles, and its change also in percent of before."""
    scale, unit = (100, " (%)") if percent else (1, "")
    if not higher_is_better:
        unit += ", lower is better"
    labels = ["before"] + (["after"] if after else [])
    vals = [before["accuracy"] * scale] + ([after["accuracy"] * scale] if after else [])
    sim = bool(after and after.get("simulated"))
    change = ""
    if after:
        d = vals[1] - vals[0]
        change = f"{d:+.2f} points" if percent else f"{d:+.4f}"
        if not percent and vals[0]:
            verdict = "same" if d == 0 else "better" if (d > 0) == higher_is_better else "worse"
            change += f" ({d / abs(vals[0]) * 100:+.1f} %: {verdict})"
    fig = _fig(f"Test {metric}{unit}", yaxis_title=f"{metric}{unit}")
    if after:
        fig.update_layout(title=dict(subtitle=dict(text=f"after - before: {change}" + (" (simulated)" if sim else ""))),
                          margin=dict(t=70))
    fmt = "{:.2f} %" if percent else "{:.4f}"
    text = [fmt.format(v) for v in vals]  # the change is in the subtitle: a short label keeps its full size
    fig.add_bar(name=f"test {metric}", x=labels, y=vals, text=text, textposition="outside", cliponaxis=False,
                marker_color=[BEFORE, SIMULATED if sim else AFTER][: len(vals)], showlegend=False)
    if percent:
        fig.update_yaxes(range=[0, 112], tickvals=[0, 20, 40, 60, 80, 100])
    else:
        fig.update_yaxes(range=[min(0, *vals) * 1.1, max(max(vals), 1e-9) * 1.15])
    return fig


def latency_chart(comparisons: list[dict]) -> Fig:
    """Median ms per call before vs after, one group per runtime, with the middle half of the calls as error bars;
    the after/before ratio and its verdict written over each group."""
    c0 = comparisons[0]
    th = c0["threads"]
    fig = _fig(f"Latency per call (ms): batch {c0['batch_size']}, {th} thread{'s' if th > 1 else ''}",
               yaxis_title="ms per call (median)", barmode="group", bargap=0.35)
    for label, color in (("before", BEFORE), ("after", AFTER)):
        ys = [c[f"{label}_ms"] for c in comparisons]
        fig.add_bar(name=f"{label} (bars: middle half of the calls)" if label == "before" else label,
                    x=[c["runtime"] for c in comparisons], y=ys, marker_color=color,
                    error_y=dict(type="data", symmetric=False,
                                 array=[c[f"{label}_high_ms"] - c[f"{label}_ms"] for c in comparisons],
                                 arrayminus=[c[f"{label}_ms"] - c[f"{label}_low_ms"] for c in comparisons]),
                    text=[f"{y:.3f}" for y in ys], textposition="inside", insidetextanchor="start",
                    hovertemplate=f"{label}: %{{y:.4f}} ms<extra>%{{x}}</extra>")
    top = max(max(c["before_high_ms"], c["after_high_ms"]) for c in comparisons)
    for c in comparisons:
        fig.add_annotation(x=c["runtime"], y=top * 1.12, text=f"{c['ratio']:.2f}x: {c['verdict']}", showarrow=False,
                           font=dict(color="#333333"))
    fig.update_yaxes(range=[0, top * 1.25])
    fig.update_xaxes(type="category")
    return fig


MAX_LAYER_BARS = 24  # more layers than this (MiniLM: 53) are drawn as a grid by block, not as bars


def layer_chart(before_layers: Sequence[dict], after_layers: Sequence[dict] | None,
                grid_bits: dict[str, int] | None = None) -> Fig:
    """Per-layer sparsity (%) bars with bits per weight on a second axis; more than ``MAX_LAYER_BARS`` layers as a
    grid by block (``layer_grid``). ``grid_bits``: layers whose int8 codes lie on a smaller grid (weight bits < 8),
    drawn at those bits."""
    layers = list(after_layers if after_layers is not None else before_layers)
    grid_bits = grid_bits or {}
    if len(layers) > MAX_LAYER_BARS:
        return layer_grid(layers, grid_bits)
    fig = _fig("Per-layer sparsity (%) and bits per weight", yaxis_title="sparsity (%)",
               yaxis2=dict(title="bits per weight", overlaying="y", side="right", range=[0, 34], dtick=8,
                            showgrid=False))
    names = [r["name"] for r in layers]
    fig.add_bar(name="sparsity after (%)", x=names, y=[r["sparsity"] * 100 for r in layers], marker_color=AFTER)
    bits = [grid_bits.get(r["name"], r["bits"]) for r in layers]
    sim = [r.get("simulated", False) for r in layers]
    colors = [GRID if r["name"] in grid_bits else SIMULATED if s_ else "#d62728" for r, s_ in zip(layers, sim)]
    legend = ("bits per weight (purple = int8 codes on a smaller grid)" if grid_bits
              else "bits per weight (orange = simulated)")
    fig.add_scatter(name=legend, x=names, y=bits, yaxis="y2", mode="markers+lines",
                    marker=dict(size=10, color=colors), line=dict(color="#d62728"))
    fig.update_yaxes(range=[0, 100], selector=dict(title_text="sparsity (%)"))
    fig.update_xaxes(title_text="layer")
    return fig


GRID = "#9467bd"  # int8 codes restricted to a smaller grid: purple


def block_of(name: str) -> tuple[str, str]:
    """(block, role) of a layer name: the block is the name up to its first numbered part (``encoder.layer.3``),
    the role the rest (``attention.self.query``); a layer outside numbered blocks has block "" and its last part."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit() and i + 1 < len(parts):
            return ".".join(parts[: i + 1]), ".".join(parts[i + 1:])
    return "", parts[-1] if len(parts) > 1 else name


def layer_grid(layers: Sequence[dict], grid_bits: dict[str, int] | None = None) -> Fig:
    """Many layers as one readable grid: a column per block (``layer.0``, ``layer.1``, ... and "other" for the
    layers outside numbered blocks), a row per role inside a block; the colour is the sparsity (%), each cell says
    its sparsity and bits per weight; hovering names the layer."""
    grid_bits = grid_bits or {}
    cells: dict[tuple[str, str], dict] = {}
    blocks: list[str] = []
    roles: list[str] = []
    for r in layers:
        block, role = block_of(r["name"])
        col = ".".join(block.split(".")[-2:]) if block else "other"
        if col not in blocks:
            blocks.append(col)
        if role not in roles:
            roles.append(role)
        cells[(role, col)] = r
    if "other" in blocks:  # the layers outside the blocks last, after the numbered blocks
        blocks = [b for b in blocks if b != "other"] + ["other"]
    z, text, hover = [], [], []
    for role in roles:
        zr, tr, hr = [], [], []
        for col in blocks:
            r = cells.get((role, col))
            if r is None:
                zr.append(None), tr.append(""), hr.append("")
                continue
            bits = grid_bits.get(r["name"], r["bits"])
            sim = " simulated" if r.get("simulated") else ""
            zr.append(round(r["sparsity"] * 100, 2))
            tr.append(f"{r['sparsity'] * 100:.0f}%<br>{bits}b{'*' if sim else ''}")
            hr.append(f"{r['name']} ({r['type']}, {r['params']:,} params): {r['sparsity'] * 100:.1f} % zeros, "
                      f"{bits}{sim} bits per weight")
        z.append(zr), text.append(tr), hover.append(hr)
    fig = _fig(f"Per-layer sparsity (%) and bits per weight, by block ({len(layers)} layers)",
               height=max(320, 34 * len(roles) + 120), margin=dict(l=10, r=10, t=50, b=40))
    fig.add_heatmap(x=blocks, y=roles, z=z, text=text, customdata=hover, texttemplate="%{text}",
                    hovertemplate="%{customdata}<extra></extra>", zmin=0, zmax=100, xgap=2, ygap=2,
                    colorscale=[[0, "#f0f4fa"], [1, AFTER]], showscale=False, textfont=dict(size=10))
    fig.update_xaxes(title_text="block (cell: sparsity, bits; * simulated)",
                     type="category", side="bottom", showgrid=False)
    fig.update_yaxes(type="category", autorange="reversed", automargin=True, showgrid=False)
    return fig


_MAX_LEVELS = 256  # weights taking at most this many distinct values are drawn level by level, not binned
ZERO = "#d62728"  # exact zeros (pruned): red


def _levels(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(distinct non-zero values, counts) when ``w`` is quantized: at most _MAX_LEVELS distinct values, each reused
    (on average 4 or more weights per value, so a small unquantized layer is not mistaken for levels); else None."""
    nz = w[w != 0]
    values, counts = np.unique(nz, return_counts=True)
    return (values, counts) if len(values) <= _MAX_LEVELS and 4 * len(values) <= nz.size else None


def _per_channel(w: np.ndarray) -> np.ndarray:
    """``w`` as (channels, fan_in) divided by each output channel's max |w|: symmetric per-channel quantization
    (scale = max|w_row| / qmax) maps every channel's codes onto the same levels code / qmax."""
    rows = w.reshape(w.shape[0], -1)  # (out, fan_in)
    amax = np.abs(rows).max(axis=1, keepdims=True)  # (out, 1)
    return np.round(rows / np.where(amax == 0, 1, amax), 6)  # (out, fan_in) in [-1, 1]


def weight_histogram(before: np.ndarray, after: np.ndarray | None, layer: str, bins: int = 80) -> Fig:
    """One layer's weights before vs after, binned on the server (the browser gets bar heights, not every weight).

    Exact zeros (pruned weights) get their own red bar labelled with their count. When the after-weights take few
    distinct values (quantized) each level is drawn as its own bar; a per-channel quantized layer is first divided
    by each output channel's max |w| so that all channels' levels line up (the x axis says so).
    """
    x_title = "weight value"
    levels = _levels(after) if after is not None else None
    if after is not None and levels is None and after.ndim >= 2 and after.shape[0] > 1:
        scaled = _per_channel(after)
        levels = _levels(scaled)
        if levels is not None:  # same scaling for before, so the two share the axis
            before, after = _per_channel(before), scaled
            x_title = "weight / max |weight| of its output channel (so per-channel levels line up)"
    before, after = before.ravel(), (after.ravel() if after is not None else None)
    log = before.size > 2000  # big layers: a log axis shows the spike of zeros and the tails together
    fig = _fig(f"Weights of {layer}: before vs after", xaxis_title=x_title,
               yaxis_title="count" + (" (log scale)" if log else ""), barmode="overlay", height=360,
               margin=dict(l=60, r=20, t=50, b=90), legend=LEGEND_BELOW)
    both = [w for w in (before, after) if w is not None]
    lo, hi = float(min(w.min() for w in both)), float(max(w.max() for w in both))
    hi = hi if hi > lo else lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)  # shared by before and after
    width = edges[1] - edges[0]
    for label, w, color in (("before", before, BEFORE), ("after", after, AFTER)):
        if w is None:
            continue
        zeros = int((w == 0).sum())
        if label == "after" and levels is not None:
            values, counts = levels
            gap = float(np.diff(values).min()) if len(values) > 1 else width
            fig.add_bar(name=f"after: {len(values)} non-zero levels (count per level)", x=values, y=counts,
                        width=max(min(0.6 * gap, 2 * width), width / 4), marker_color=color, opacity=0.8,
                        hovertemplate="level %{x:.4g}: %{y:,} weights<extra></extra>")
        else:
            counts, _ = np.histogram(w[w != 0], bins=edges)  # (bins,) zeros are drawn on their own below
            fig.add_bar(name=f"{label}: {w.size - zeros:,} non-zero weights (count per bin)",
                        x=(edges[:-1] + edges[1:]) / 2, y=counts, width=width, marker_color=color, opacity=0.6,
                        hovertemplate="%{x:.4g}: %{y:,} weights<extra></extra>")
        if zeros:
            color = ZERO if label == "after" else "#555555"
            fig.add_bar(name=f"{label}: {zeros:,} exact zeros of {w.size:,} ({zeros / w.size:.0%})", x=[0.0],
                        y=[zeros], width=max(width, (hi - lo) / 60), marker_color=color, opacity=0.9,
                        hovertemplate=f"{label}: %{{y:,}} weights exactly 0<extra></extra>")
            fig.add_annotation(x=0.0, y=float(np.log10(zeros)) if log else zeros, text=f"{label}: {zeros:,} zeros",
                               showarrow=False, yanchor="bottom", xanchor="left" if label == "after" else "right",
                               xshift=6 if label == "after" else -6, font=dict(color=color))
    top = max(float(np.max(t.y)) for t in fig.data)
    fig.update_xaxes(range=[lo - 2 * width, hi + 2 * width])
    if log:
        fig.update_yaxes(type="log", range=[-0.3, float(np.log10(max(top, 1))) + 0.5], dtick=1)  # 1, 10, 100, ...
    else:
        fig.update_yaxes(range=[0, top * 1.15])
    return fig


def per_class_chart(before_cm: np.ndarray, after_cm: np.ndarray | None, class_names: Sequence[str]) -> Fig:
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


def confusion_chart(cm: np.ndarray, class_names: Sequence[str], title: str) -> Fig:
    """A confusion matrix heatmap (counts; rows = true class, columns = predicted)."""
    fig = _fig(title, xaxis_title="predicted class", yaxis_title="true class", height=360)
    fig.add_heatmap(z=cm, x=list(class_names), y=list(class_names), colorscale="Blues", text=cm,
                    texttemplate="%{text}", colorbar=dict(title="count"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def pareto_chart(df: pd.DataFrame, x: str, x_title: str, title: str, highlight: Sequence[int] = (),
                 y: str = "change_pt",
                 y_title: str = "change vs own baseline (pt, or %)",  # fits a half-width chart at 1280 px
                 error_x: tuple[str, str] | None = None) -> Fig:
    """Every experiment as (x, y), both relative to the experiment's own model's baseline (so models of very
    different sizes share one chart), one colour per model, simulated results hollow, the per-model Pareto front
    (lower x, higher y) dashed, baselines starred at (1, 0)."""
    fig = _fig(title, xaxis_title=x_title, yaxis_title=y_title, height=400)
    d = df.dropna(subset=[x, y])
    for model, g in d.groupby("model", sort=False):
        rest = g[~g["baseline"]]
        kw = {}
        if error_x and len(rest):
            lo, hi = error_x
            kw["error_x"] = dict(type="data", symmetric=False, array=(rest[hi] - rest[x]).tolist(),
                                 arrayminus=(rest[x] - rest[lo]).tolist())
        if len(rest):
            fig.add_scatter(name=str(model), x=rest[x], y=rest[y], mode="markers", legendgroup=str(model),
                            marker=dict(size=10, symbol=["diamond-open" if v else "circle" for v in rest["simulated"]]),
                            text=rest["label"], customdata=rest["id"],
                            hovertemplate="row %{customdata}: %{text}<br>%{x:.3f}x, %{y:+.2f}<extra></extra>", **kw)
        front = pareto_front(g, x, y)
        if len(front) > 1:
            fig.add_scatter(name=f"{model}: Pareto front", x=front[x], y=front[y], mode="lines", legendgroup=str(model),
                            line=dict(dash="dash", width=1), hoverinfo="skip", showlegend=False)
    base = d[d["baseline"]]
    if len(base):
        fig.add_scatter(name="baseline (each model's own)", x=base[x], y=base[y], mode="markers",
                        marker=dict(size=16, symbol="star", color="gold", line=dict(color="black", width=1)),
                        text=base["model"], hovertemplate="%{text} baseline<extra></extra>")
    hi = d[d["id"].isin(list(highlight))]
    if len(hi):
        fig.add_scatter(name="the two rows compared below", x=hi[x], y=hi[y], mode="markers",
                        marker=dict(size=20, symbol="circle-open", color="red", line=dict(width=2)), hoverinfo="skip")
    fig.add_vline(x=1.0, line_dash="dot", line_color="#999999")
    fig.update_layout(legend=LEGEND_BELOW)
    return fig


def pareto_front(df: pd.DataFrame, x: str, y: str = "accuracy_%") -> pd.DataFrame:
    """Rows no other row beats on both ``x`` (lower is better) and ``y`` (higher is better), sorted by ``x``."""
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    keep, best = [], -np.inf
    for idx, row in d.iterrows():
        if row[y] > best:
            keep.append(idx)
            best = row[y]
    return d.loc[keep]


# ------------------------------------------------------------------------------------------------ Learn
def learn_prune_histogram(before: np.ndarray, after: np.ndarray) -> Fig:
    """A layer's weight histogram: weights the pruned model kept (blue) and those it set to zero (red), stacked
    bars binned on the server."""
    before, zero = before.ravel(), after.ravel() == 0
    frac = zero.mean() * 100
    fig = _fig(f"Weights of one layer: {frac:.0f} % set to zero (red)", xaxis_title="weight value (before pruning)",
               yaxis_title="count per bin", barmode="stack")
    lo, hi = float(before.min()), float(before.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, 81)  # 80 bins
    mid = (edges[:-1] + edges[1:]) / 2
    for name, part, color in (("kept", before[~zero], AFTER), ("pruned to zero", before[zero], ZERO)):
        counts, _ = np.histogram(part, bins=edges)
        fig.add_bar(name=f"{name} ({part.size:,})", x=mid, y=counts, width=edges[1] - edges[0], marker_color=color)
    return fig


def learn_quant_levels(x: np.ndarray, q: np.ndarray, bits: int) -> Fig:
    """A smooth signal and its n-bit quantized version: the staircase of 2^n levels."""
    fig = _fig(f"{bits}-bit quantization: {2 ** bits:,} levels", xaxis_title="input index", yaxis_title="value")
    fig.add_scatter(name="fp32 value", x=np.arange(len(x)), y=x, mode="lines", line=dict(color=BEFORE))
    fig.add_scatter(name=f"quantized to {bits} bits", x=np.arange(len(q)), y=q, mode="lines",
                    line=dict(color=AFTER, shape="hv"))
    return fig


def learn_softmax(logits: np.ndarray, temperature: float, class_names: Sequence[str]) -> Fig:
    """Softmax of one set of logits at T = 1 (the plain softmax) and at the chosen temperature."""
    fig = _fig(f"Soft targets: softmax(logits / T), T = {temperature:g}", xaxis_title="class",
               yaxis_title="probability", barmode="group")
    runs = [(1.0, BEFORE, "T = 1 (plain softmax)")]
    if temperature != 1.0:
        runs.append((temperature, AFTER, f"T = {temperature:g} (soft targets)"))
    for t, color, name in runs:
        z = logits / t
        p = np.exp(z - z.max())
        p /= p.sum()
        fig.add_bar(name=name, x=list(class_names), y=p, marker_color=color)
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1])
    return fig


def learn_dtype_errors(rows: Sequence[dict]) -> Fig:
    """Max absolute error of one tensor cast to each data type (log scale). A type that overflowed (inf) gets a
    red bar reaching above the others, labelled as the overflow it is, instead of vanishing from a log axis."""
    finite = [r["max_abs_error"] for r in rows if np.isfinite(r["max_abs_error"]) and r["max_abs_error"] > 0]
    lo = min(finite) if finite else 1e-8
    hi = max(finite) if finite else 1.0
    top = hi * 100  # where an overflow bar ends
    ys, text, colors = [], [], []
    for r in rows:
        e = r["max_abs_error"]
        if not np.isfinite(e) or r.get("non-finite values", 0):
            ys.append(top)
            text.append(f"overflow: {r.get('non-finite values', 0):,} inf" if r.get("non-finite values") else "inf")
            colors.append(ZERO)
        else:
            ys.append(max(e, lo / 10))
            text.append("exact" if e == 0 else f"{e:.1e}")
            colors.append(AFTER)
    fig = _fig("Max |error| after casting the tensor", xaxis_title="data type", yaxis_title="max |error| (log)")
    fig.add_bar(name="max |error|", x=[r["dtype"] for r in rows], y=ys, text=text, textposition="outside",
                cliponaxis=False, marker_color=colors, showlegend=False)
    fig.update_yaxes(type="log", range=[np.log10(lo / 30), np.log10(top) + 1.2], dtick=2, exponentformat="power")
    fig.update_xaxes(type="category")
    return fig

