"""Search: let the library search recipes for a model and watch the front of best trade-offs fill in.

The page only calls ``compression_core.search.search`` (in a background thread of this server process, local
executor, one intra-op thread) and draws what it reports: each finished trial as it arrives, the non-dominated front,
the uniform settings the search was seeded with, and the current Explore configuration for comparison. A front point
can be loaded into Explore's controls or downloaded as the exact recipe that reproduces its numbers with ``apply``.
"""

from __future__ import annotations

import threading
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import engines
import state
import take_home
import techniques as T
import trust
from compression_core.search import search
from compression_core.timing import TOLERANCE

RUN = "srch_run"  # session key: the running (or last) search of this browser session


def start(ref: str, trials: int, seed: int, objectives: list[str], max_size: int | None, max_drop: float | None) -> None:
    """Run the search in a thread; the thread writes only into its own ``run`` dict (never into session state)."""
    run = {"ref": ref, "trials": trials, "seed": seed, "points": [], "front": [], "message": "starting",
           "done": False, "error": None, "result": None, "stop": threading.Event(), "t0": time.perf_counter()}

    def on_trial(point, front) -> None:
        run["points"].append(point.model_dump())
        run["front"] = [p.model_dump() for p in front]

    def work() -> None:
        try:
            res = search(trust.check_model_reference(ref), trials=trials, seed=seed, objectives=objectives,
                         max_size_bytes=max_size, max_drop=max_drop,
                         progress=lambda f, m: run.__setitem__("message", m), on_trial=on_trial,
                         should_stop=run["stop"].is_set)
            run["result"] = {"baseline": res.baseline, "seconds": res.seconds, "cancelled": res.cancelled,
                             "first_point_seconds": res.first_point_seconds}
            run["front"] = [p.model_dump() for p in res.front]
        except Exception as e:  # one line, shown by the page
            run["error"] = state.one_line(e)
        finally:
            run["done"] = True

    run["thread"] = threading.Thread(target=work, name=f"search-{ref}", daemon=True)
    st.session_state[RUN] = run
    run["thread"].start()


def explore_point(ref: str) -> dict | None:
    """The latest Explore configuration of this model in the history (size, metric), if any."""
    rows = [r for r in state.history() if r.get("ref") == ref and not r.get("baseline")]
    return rows[-1] if rows else None


def chart(run: dict, base: dict | None, mine: dict | None, f: dict, picked: dict | None = None) -> go.Figure:
    """Every trial as (file size, metric), the front as a step line; the metric in its own units (``f``: the
    workload's facts), a lower-is-better one (perplexity) titled so, its front falling to the right; ``picked``: the
    front point chosen under "Use a front point", ringed."""
    metric = f["metric"]
    scale, unit = (100, " %") if f["percent"] else (1, "")
    pts = [p for p in run["points"] if p.get("error") is None]
    fig = go.Figure()
    others = [p for p in pts if p["origin"] == "search"]
    seeds = [p for p in pts if p["origin"] != "search"]
    for group, name, color, symbol in ((others, "trials", "#b0b0b0", "circle"),
                                       (seeds, "uniform settings and budget fits (seeds)", "#1f77b4", "diamond")):
        fig.add_trace(go.Scatter(
            x=[p["size_bytes"] / 1024 for p in group], y=[p["accuracy"] * scale for p in group], mode="markers",
            name=name, marker=dict(color=color, symbol=symbol, size=8),
            customdata=[p["trial"] for p in group],
            hovertemplate=f"trial %{{customdata}}: %{{y:.2f}}{unit} at %{{x:,.1f}} KB<extra></extra>"))
    front = sorted(run["front"], key=lambda p: p["size_bytes"])
    fig.add_trace(go.Scatter(
        x=[p["size_bytes"] / 1024 for p in front], y=[p["accuracy"] * scale for p in front], mode="lines+markers",
        name="front (best trade-offs)", line=dict(color="#d62728", shape="hv"), marker=dict(size=11),
        customdata=[p["trial"] for p in front],
        hovertemplate=f"front, trial %{{customdata}}: %{{y:.2f}}{unit} at %{{x:,.1f}} KB<extra></extra>"))
    if base:
        fig.add_trace(go.Scatter(x=[base["size_bytes"] / 1024], y=[base["accuracy"] * scale], mode="markers",
                                 name="uncompressed", marker=dict(color="black", symbol="square", size=10)))
    if mine:
        fig.add_trace(go.Scatter(x=[mine["smallest_bytes"] / 1024], y=[mine["accuracy"] * scale], mode="markers",
                                 name="your Explore setting", marker=dict(color="#2ca02c", symbol="star", size=16)))
    if picked:  # the picker below moves this ring: the chart shows which point the buttons act on
        fig.add_trace(go.Scatter(x=[picked["size_bytes"] / 1024], y=[picked["accuracy"] * scale], mode="markers",
                                 name="chosen below", hoverinfo="skip",
                                 marker=dict(color="rgba(0,0,0,0)", size=22, line=dict(color="#d62728", width=2))))
    fig.update_layout(title=dict(text=f"Test {metric} vs file size: each dot is a recipe applied and measured", x=0.0),
                      xaxis_title="file size (KB, sparse-encoded when smaller; log scale)", xaxis_type="log",
                      yaxis_title=f"test {state.metric_axis(f)}", height=460, legend=dict(orientation="h", y=-0.25),
                      margin=dict(l=60, r=20, t=50, b=40))
    return fig


def main_spec(t: T.Technique, value) -> T.FieldSpec | None:
    """The setting a per-layer override value stands in for: the technique's first fraction (a float within [0, 1])
    for float values, its first integer setting whose range holds the value for ints."""
    for s in T.specs(t):
        if isinstance(value, float) and s.kind == "float" and s.lo is not None and s.hi is not None \
                and 0 <= s.lo and s.hi <= 1:
            return s
        if isinstance(value, int) and s.kind == "int" and (s.lo is None or s.lo <= value) \
                and (s.hi is None or value <= s.hi):
            return s
    return None


def on_slider(s: T.FieldSpec, value) -> bool:
    """True when the main slider of ``s`` can show ``value`` exactly (on its range and step)."""
    if s.kind == "int":
        return True
    if s.lo is None or s.hi is None:
        return False
    step = T._step(s.lo, s.hi)
    k = (float(value) - s.lo) / step
    return s.lo <= value <= s.hi and abs(k - round(k)) < 1e-6


def fill_explore(ref: str, steps: list[dict]) -> list[str]:
    """Write a front point's pruning and quantization steps into the Explore page's widget keys (technique choice,
    settings, per-layer values); returns the labels filled. Per-layer values that are all the same become the main
    slider's value; different ones are loaded into the per-layer sliders, which Explore then shows open with a line
    saying so (a main slider at 0.00 must not hide them)."""
    ss = st.session_state
    ss["x_model"] = ref
    filled = []
    for key in [k for k in ss if isinstance(k, str) and k.startswith("x_") and f"_ovr_{ref}_" in k]:
        ss[key] = "global"  # no per-layer value left over from an earlier load
    for key in [k for k in ss if isinstance(k, str) and k.startswith("x_") and k.endswith(f"_ovr_loaded_{ref}")]:
        del ss[key]
    ss[f"x_prune_{ref}"], ss["x_quant"] = "none", "none"  # nothing left over from an earlier load
    ss.pop(f"x_layers_{ref}", None)
    prunes = any((t := T.by_kind(s["kind"])) is not None and t.ui.family == "prune" for s in steps)
    for step in steps:
        t = T.by_kind(step["kind"])
        if t is None or t.ui.family not in ("prune", "quantize") or T.is_addon(t):
            continue
        if t.ui.family == "prune":
            ss[f"x_prune_{ref}"] = t.label
            ss[f"x_cls_{ref}"] = bool(step.get("include_classifier", False))
            if step.get("targets"):
                ss[f"x_layers_{ref}"] = list(step["targets"])
        else:
            ss["x_quant"] = t.label
            if not prunes and "include_classifier" in t.fields():  # Explore's one box: as this step has it
                ss[f"x_cls_{ref}"] = bool(step.get("include_classifier",
                                                   t.fields()["include_classifier"].get_default()))
        for s in T.specs(t):
            if s.name in step and s.name not in ("targets", "include_classifier"):
                ss[f"x_{t.kind}_{s.name}"] = step[s.name]
        ovr = {layer: (round(float(v), 3) if isinstance(v, float) else v)
               for layer, v in (step.get("overrides") or {}).items()}
        values = set(ovr.values())
        main = main_spec(t, next(iter(values))) if len(values) == 1 else None
        if main is not None and on_slider(main, next(iter(values))):
            ss[f"x_{t.kind}_{main.name}"] = next(iter(values))  # uniform: the main slider shows it
        elif ovr:
            for layer, v in ovr.items():
                ss[f"x_{t.kind}_ovr_{ref}_{layer}"] = v
            low, high = min(values), max(values)
            span = (f"{low:.1%} to {high:.1%}" if isinstance(low, float) else f"{low} to {high}") if low != high \
                else f"{low:.1%}" if isinstance(low, float) else str(low)
            ss[f"x_{t.kind}_ovr_loaded_{ref}"] = f"from Search: {len(ovr)} layers, {span}"
        filled.append(t.label)
    return filled


def sparsity_text(sparsity: dict[str, float]) -> str:
    """A front point's per-layer sparsity in a few characters: one value when uniform, else the mean and range."""
    values = list(sparsity.values())
    if not values or max(values) == 0:
        return "none"
    if min(values) == max(values):
        return f"{values[0]:.1%} uniform"
    return f"{sum(values) / len(values):.1%} mean ({min(values):.1%}-{max(values):.1%})"


def best_point(front: list[dict], higher_is_better: bool = True) -> int:
    """The index of the front's best-metric point (the lowest for a lower-is-better metric such as perplexity; the
    smaller file on a tie): what the picker starts on."""
    sign = 1 if higher_is_better else -1
    return max(range(len(front)), key=lambda k: (sign * front[k]["accuracy"], -front[k]["size_bytes"]))


# ---------------------------------------------------------------------------------------------------- page
st.title("Search: the best trade-offs, found for you")
st.caption("Optuna's multi-objective sampler (seeded) tries recipes: per-layer sparsity, a storage method (int8, "
           "int4, ...) and more. Each trial is applied and measured for real on the test split. The search starts "
           "from the uniform settings and budget fits, so its front can only improve on them. Same seed, same front.")
refs = state.models()
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
ref = c1.selectbox("Model", refs, key="q_model", index=state.default_index(refs), format_func=state.label)
try:
    f = state.facts(ref)
    bstats = state.baseline_view(ref)["stats"]
except Exception as e:
    st.error(state.one_line(e))
    st.stop()
trials = c2.number_input("Trials", min_value=5, max_value=500, value=40, step=5, key="q_trials")
seed = c3.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="q_seed")
latency = c4.checkbox("Latency too", key="q_latency",
                      help="1 thread, batch 1; latency is a measurement, so the front then varies between runs")
d1, d2 = st.columns(2)
size_kb = d1.number_input("Max file size (KB, 0 = no limit)", min_value=0.0, value=0.0, step=10.0, key="q_size")
drop = d2.number_input(f"Max {f['metric']} drop (points, 0 = no limit)" if f["higher_is_better"] else
                       f"Max {f['metric']} rise (% of the baseline, 0 = no limit)",
                       min_value=0.0, max_value=100.0, value=0.0, step=0.5, key="q_drop",
                       help=None if f["higher_is_better"] else
                       f"lower is better: {f['metric']} may be at most this many percent above the uncompressed "
                       "model's")

run = st.session_state.get(RUN)
running = run is not None and not run["done"]
b1, b2 = st.columns([1, 5])
if b1.button("Start search", type="primary", disabled=running, key="q_start"):
    start(ref, int(trials), int(seed), ["accuracy", "size"] + (["latency"] if latency else []),
          int(size_kb * 1024) if size_kb > 0 else None, float(drop) if drop > 0 else None)
    run = st.session_state[RUN]
    running = True
if b2.button("Cancel", disabled=not running, key="q_cancel"):
    run["stop"].set()


@st.fragment(run_every=1.0 if running else None)
def live() -> None:
    run = st.session_state.get(RUN)
    if run is None:
        st.info("Pick a model and a trial budget, then start the search.")
        return
    if run["error"]:
        st.error(run["error"])
        return
    n = len(run["points"])
    msg = ("cancelled" if run["result"] and run["result"]["cancelled"] else "done") if run["done"] else run["message"]
    st.progress(min(n / run["trials"], 1.0), text=f"{n}/{run['trials']} trials, {time.perf_counter() - run['t0']:.0f} s: "
                                                  f"{msg}"[:200])
    base = {"size_bytes": bstats["size_bytes"], "accuracy": bstats["accuracy"]} if run["ref"] == ref else None
    front = sorted(run["front"], key=lambda p: p["size_bytes"])
    k = (st.session_state.get("q_pick") if st.session_state.get("q_pick_run") == id(run) else best_point(front)) \
        if run["done"] and front else None  # the picker's point (its first choice before it is drawn)
    st.plotly_chart(chart(run, base, explore_point(run["ref"]) if run["ref"] == ref else None, f,
                          front[k] if isinstance(k, int) and 0 <= k < len(front) else None), key="q_chart")
    if run["front"]:
        rows = [{"#": i + 1, "trial": p["trial"], "origin": p["origin"], f["metric"]: state.metric_text(p["accuracy"], f),
                 "KB": round(p["size_bytes"] / 1024, 1), "x of baseline": p["size_ratio"],
                 "method": p["settings"]["method"], "sparsity": sparsity_text(p["settings"]["sparsity"])}
                for i, p in enumerate(sorted(run["front"], key=lambda p: p["size_bytes"]))]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={  # fits 1280 px
            "#": st.column_config.NumberColumn(width=40), "trial": st.column_config.NumberColumn(width=55),
            "origin": st.column_config.TextColumn(width=70),
            f["metric"]: st.column_config.TextColumn(width=80),
            "KB": st.column_config.NumberColumn(format="%.1f", width=60),
            "x of baseline": st.column_config.NumberColumn("size x", format="%.3f", width=60,
                                                           help="size as a multiple of the baseline's"),
            "method": st.column_config.TextColumn(width=90),
            "sparsity": st.column_config.TextColumn("sparsity (per layer)", width=200,
                                                    help="the layers' sparsity: one value when uniform, else the "
                                                         "mean and range (the recipe below lists every layer)")})
    if run["done"] and st.session_state.get("q_last_shown") != id(run):
        st.session_state["q_last_shown"] = id(run)
        st.rerun()  # once, so the point picker below shows the final front


live()

run = st.session_state.get(RUN)
if run is not None and run["done"] and run["front"] and not run["error"]:
    front = sorted(run["front"], key=lambda p: p["size_bytes"])
    st.subheader("Use a front point")
    if st.session_state.get("q_pick_run") != id(run) or st.session_state.get("q_pick") not in range(len(front)):
        st.session_state["q_pick_run"] = id(run)  # a new front: start from its best-metric point
        st.session_state["q_pick"] = best_point(front, f["higher_is_better"])
    i = st.selectbox("Front point (the best metric first chosen)", range(len(front)), key="q_pick",
                     format_func=lambda k: f"#{k + 1}: {state.metric_text(front[k]['accuracy'], f)} at "
                                           f"{front[k]['size_bytes'] / 1024:,.1f} KB ({front[k]['size_ratio']:.3f}x)"
                                           f", {front[k]['settings']['method']}")
    p = front[i]
    base_ms = ((run.get("result") or {}).get("baseline") or {}).get("latency_ms")
    if p.get("latency_ms") and base_ms:  # the search timed it (batch 1, 1 thread): slower than fp32 is said here
        ratio = p["latency_ms"] / base_ms
        line = engines.slower_line(engines.label_of(p["recipe"]), {
            "verdict": "slower" if ratio > 1 + TOLERANCE else "not slower", "ratio": ratio, "runtime": "torch"}, 1, 1)
        engines.slower_then_faster(run["ref"], p["recipe"], 1, 1, [line] if line else [])
    recipe_yaml = state.to_yaml(p["recipe"])
    e1, e2 = st.columns(2)
    if e1.button("Load into Explore", key="q_load"):
        filled = fill_explore(run["ref"], p["recipe"]["steps"])
        st.success(f"Filled Explore's controls ({', '.join(filled) or 'baseline'}). Explore applies its classifier "
                   "box to every technique, so its numbers can differ slightly; the downloaded recipe is exact.")
        try:
            st.page_link("pages/explore.py", label="Go to Explore", icon=":material/tune:")
        except Exception:
            pass
    e2.download_button("Download this recipe (YAML)", recipe_yaml, file_name=f"search-{f['name']}-{i + 1}.yaml",
                       mime="text/yaml", key="q_download")
    with st.expander("Recipe"):
        st.code(recipe_yaml, language="yaml")
    take_home.offer(p["recipe"], "take_q", title="Take this model home")
