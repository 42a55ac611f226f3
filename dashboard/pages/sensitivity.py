"""Sensitivity: how much pruning (how few bits, how low a rank) each layer tolerates alone, and a per-layer fit to a
budget. The metric is shown in its own units: a lower-is-better one (perplexity) rises as a layer is compressed."""

import typing

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import jobs
import state
import store
import techniques as T
from compression_core.budget import fit_budget, fitted_recipe
from compression_core.recipe import recipe_to_yaml
from compression_core.sensitivity import Sweep
from compression_core.sensitivity_cache import cached_sensitivity, lookup_key, sensitivity_key

# every sweep the library runs whose technique is registered (low-rank: the ``lowrank`` kind)
SWEEPS = tuple(k for k in typing.get_args(Sweep) if k in ("prune", "quantize") or T.by_kind(k) is not None)
SWEEP_LABELS = {"prune": "prune (magnitude, per layer)", "quantize": "quantize (simulated bits)",
                **{k: f"{T.by_kind(k).label} (rank ratio)" for k in SWEEPS if T.by_kind(k) is not None}}


@st.cache_data(show_spinner=False, max_entries=32)
def sweep(ref: str, technique: str, include_cls: bool) -> dict:
    """The library's sensitivity sweep on the calibration split, in this process (a small model: under a second),
    kept on disk by content (``sensitivity_cache``) and per process."""
    wl = state.baseline(ref)
    res, hit = cached_sensitivity(wl.model, wl, technique, include_classifier=include_cls, name=wl.name)
    return {**res.to_json_dict(), "cached": hit}


@st.cache_data(show_spinner=False, max_entries=64)
def sweep_key(ref: str, technique: str, include_cls: bool) -> str:
    """The disk-cache key of a sweep of the (never changing) baseline ``ref``: computed once per process."""
    wl = state.baseline(ref)
    return sensitivity_key(wl.model, wl, technique, include_classifier=include_cls)


def stored_or_job(ref: str, technique: str, include_cls: bool) -> dict | None:
    """A big model's sweep (minutes): from the disk cache when it was computed before, else as a job in the worker
    pool (progress and Cancel on the page, which stays usable; leaving the page's session cancels it). None while
    the job runs."""
    key = sweep_key(ref, technique, include_cls)
    got = lookup_key(key)
    if got is not None:
        return {**got.to_json_dict(), "cached": True}
    st.info("Sweeping every layer of a large model takes a while: it runs as a job in a worker process (this page "
            "and the others stay usable), and the result is kept on disk for everyone, across restarts.")
    payload = {"model": ref, "technique": technique, "include_classifier": include_cls}
    return jobs.job_panel("sensitivity", payload, f"sensitivity:{key[:24]}", store.browser_id())


@st.cache_data(show_spinner=False, max_entries=64)
def fit(ref: str, technique: str, include_cls: bool, target: str, value: float) -> dict:
    """The library's budget fit, the explicit step it resolves to and that step as a one-step recipe."""
    wl = state.baseline(ref)
    spec = {"technique": technique, "include_classifier": include_cls,
            ("max_size_bytes" if target == "size" else "max_accuracy_drop"): (int(value) if target == "size" else value)}
    f = fit_budget(wl.model, wl, spec)
    step = f.step()
    return {"fit": f.model_dump(), "step": None if step is None else step.model_dump(mode="json"),
            "recipe": recipe_to_yaml(fitted_recipe(ref, f))}


def level_label(technique: str, x: float) -> str:
    if technique == "lowrank":
        return f"rank {x * 100:g} %"
    return f"{x * 100:g} %" if technique == "prune" else f"{int(x)} bits"


def _metric(res: dict) -> tuple[str, int, str, bool]:
    """(metric name, scale, unit, higher is better) of a sweep result (older cached results: accuracy in %)."""
    pct = res.get("percent", True)
    return res.get("metric", "accuracy"), 100 if pct else 1, " (%)" if pct else "", res.get("higher_is_better", True)


X_TITLES = {"prune": "sparsity of that layer (%)", "quantize": "bits per weight of that layer",
            "lowrank": "rank kept by that layer (fraction of full rank)"}
WHAT = {"prune": "pruned (magnitude)", "quantize": "fake-quantized (simulated)", "lowrank": "factorized (low rank)"}


def heatmap(res: dict) -> go.Figure:
    tech = res["technique"]
    metric, scale, unit, up = _metric(res)
    xs = [level_label(tech, p[0]) for p in res["layers"][0]["points"]]
    ys = [c["name"] for c in res["layers"]]
    z = [[p[1] * scale for p in c["points"]] for c in res["layers"]]  # (layers, levels) metric
    rng = dict(zmin=0, zmax=100) if scale == 100 else {}
    fig = go.Figure(go.Heatmap(  # green is good: high accuracy, or low perplexity
        z=z, x=xs, y=ys, colorscale="RdYlGn" if up else "RdYlGn_r", texttemplate="%{z:.1f}" if scale == 100 else
        "%{z:.3g}", colorbar=dict(title=f"calib {metric}{unit}"), **rng,
        hovertemplate="layer %{y}<br>" + {"prune": "sparsity", "lowrank": "rank"}.get(tech, "weights") +
                      f" %{{x}}<br>calibration {metric} %{{z:.3g}}{unit}<extra></extra>"))
    lower = "" if up else ", lower is better"
    fig.update_layout(title=dict(text=f"Calibration {metric}{unit}{lower} with ONE layer alone {WHAT[tech]}", x=0.0),
                      xaxis_title=X_TITLES[tech],
                      yaxis_title="layer", yaxis=dict(autorange="reversed"), xaxis=dict(type="category"),
                      height=140 + 36 * len(ys),
                      margin=dict(l=60, r=20, t=50, b=40))
    return fig


def curves(res: dict) -> go.Figure:
    tech = res["technique"]
    metric, scale, unit, up = _metric(res)
    fig = go.Figure()
    for c in res["layers"]:
        xs = [p[0] * 100 if tech == "prune" else p[0] for p in c["points"]]
        fig.add_trace(go.Scatter(x=xs, y=[p[1] * scale for p in c["points"]], mode="lines+markers", name=c["name"],
                                 hovertemplate=c["name"] + f": %{{y:.3g}}{unit} at %{{x}}<extra></extra>"))
    fig.add_hline(y=res["baseline_accuracy"] * scale, line_dash="dash", line_color="gray",
                  annotation_text="baseline", annotation_position="bottom left")
    lower = "" if up else ", lower is better"
    fig.update_layout(title=dict(text=f"Sensitivity curves: calibration {metric}{unit}{lower} per layer", x=0.0),
                      xaxis_title={"prune": "sparsity of the layer (%)", "quantize": "bits per weight",
                                   "lowrank": "rank kept (fraction of full rank)"}[tech],
                      yaxis_title=f"calibration {metric}{unit}{lower}", legend_title_text="layer",
                      height=360,
                      margin=dict(l=50, r=20, t=50, b=40))
    if scale == 100:
        fig.update_yaxes(range=[0, 102])
    if tech in ("quantize", "lowrank"):  # more compression to the right
        fig.update_xaxes(autorange="reversed")
    return fig


def head_chart(heads: list[dict]) -> go.Figure:
    fig = go.Figure(go.Bar(x=[f"{h['layer']} head {h['head']}" for h in heads],
                           y=[h["accuracy_drop"] * 100 for h in heads], name="accuracy drop",
                           marker_color=["#d62728" if h["accuracy_drop"] > 0 else "#2ca02c" for h in heads],
                           hovertemplate="%{x}: %{y:+.1f} points<extra></extra>"))
    fig.update_layout(title=dict(text="Head importance: calibration accuracy drop when ONE head is removed (points)",
                                 x=0.0), xaxis_title="attention head", yaxis_title="accuracy drop (points)",
                      showlegend=True, legend=dict(orientation="h", y=-0.35), height=340,
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig


def fill_explore(ref: str, step: dict) -> str | None:
    """Write a fitted step into the Explore page's own widget keys (the technique of its family, its settings,
    layer selection, classifier box and one per-layer override per layer); returns the technique's label."""
    t = T.by_kind(step["kind"])
    if t is None or t.ui.family not in ("prune", "quantize"):  # lowrank is of the prune family
        return None
    ss = st.session_state
    ss["x_model"] = ref
    ss[f"x_cls_{ref}"] = bool(step.get("include_classifier", False))
    if step.get("targets"):
        ss[f"x_layers_{ref}"] = list(step["targets"])
    ss[f"x_prune_{ref}" if t.ui.family == "prune" else "x_quant"] = t.label
    for s in T.specs(t):
        if s.name in step:
            ss[f"x_{t.kind}_{s.name}"] = step[s.name]
    for layer, v in (step.get("overrides") or {}).items():
        ss[f"x_{t.kind}_ovr_{ref}_{layer}"] = round(float(v), 3) if isinstance(v, float) else v
    return t.label


st.title("Sensitivity: which layers can take how much compression")
st.caption("Each layer is compressed ALONE and the model is evaluated on the calibration split (the test split is "
           "kept for reporting). The classifier is left alone unless you tick the box. Evaluation: one working "
           "copy, weights swapped in place, the whole calibration split in one batch, cached inputs for the layers "
           "before the changed one.")
c1, c2, c3 = st.columns([1, 1, 1])
refs = state.models()
name = c1.selectbox("Model", refs, key="s_model", index=state.default_index(refs), format_func=state.label)
technique = c2.radio("Technique", SWEEPS, key="s_technique", format_func=lambda k: SWEEP_LABELS.get(k, k))
try:
    facts = state.facts(name)
except Exception as e:  # a workload that cannot be loaded: one line
    st.error(state.one_line(e))
    st.stop()
include_cls = c3.checkbox(f"Include the classifier ({facts['classifier']})", key=f"s_cls_{name}")

try:
    if state.preview_size(name) is None:  # a small model: the sweep takes under a second, here
        with st.spinner("sweeping every layer..."):
            res = sweep(name, technique, include_cls)
    else:
        res = stored_or_job(name, technique, include_cls)
except Exception as e:  # one line, never a traceback
    st.error(state.one_line(e))
    st.stop()
if res is None:  # the job is queued or running: its panel above shows progress and Cancel
    st.stop()

st.caption(f"Baseline calibration {facts['metric']} {state.metric_text(res['baseline_accuracy'], facts)}"
           + ("" if facts["higher_is_better"] else " (lower is better)") + f" on {res['samples']} samples; "
           f"sweep took {res['seconds']:.2f} s" + (" (read from the disk cache now)." if res.get("cached") else "."))
st.plotly_chart(heatmap(res), key="sens_heatmap")
st.plotly_chart(curves(res), key="sens_curves")
if res.get("heads"):
    st.plotly_chart(head_chart(res["heads"]), key="sens_heads")
    st.caption("A head is removed by zeroing its value rows (its output is then exactly zero). A negative drop "
               "means the model did slightly better without it on these samples.")

st.subheader("Fit to a budget")
size_kind = {"prune": "sparse-encoded file (dense/bitmask/CSR per tensor)",
             "lowrank": "dense file of the factorized model"}.get(
    technique, "theoretical size of simulated bits (bits x params / 8), not a real packed file")
setting = {"prune": "sparsity", "lowrank": "rank ratios"}.get(technique, "bits")
up = facts["higher_is_better"]
drop_unit = "points" if up else "% of the baseline"
st.caption(f"Picks per-layer {setting} from the sensitivity curves (greedy: least {facts['metric']} lost per byte "
           f"saved, then refined on the joint calibration {facts['metric']}). Size means the {size_kind}."
           + ("" if up else f" Lower {facts['metric']} is better: the budget is how far it may RISE, in percent of "
                            "the uncompressed model's."))
f1, f2, f3 = st.columns([1, 1, 1])
drop_label = f"max {facts['metric']} drop (points)" if up else f"max {facts['metric']} rise (%)"
target_label = f1.radio("Budget", ["file size (KB)", drop_label], key="s_target")
target = "size" if target_label.startswith("file") else "drop"
if target == "size":
    value = f2.number_input("Target file size (KB)", min_value=0.0, value=float(state.baseline_view(name)["stats"]
                            ["size_bytes"] // 2048), step=1.0, key=f"s_kb_{name}")
    budget_value = value * 1024
else:
    value = f2.number_input(f"Max calibration {facts['metric']} " + ("drop (points)" if up else
                                                                     "rise (% of the baseline)"),
                            min_value=0.0, max_value=100.0, value=1.0, step=0.5, key="s_drop")
    budget_value = value
if f3.button("Fit to budget", type="primary", key="s_fit"):
    try:
        with st.spinner("fitting..."):
            st.session_state["sens_fit"] = {"model": name, "technique": technique,
                                            **fit(name, technique, include_cls, target, float(budget_value))}
    except Exception as e:  # CompressionError (bad or impossible target): one line
        st.session_state.pop("sens_fit", None)
        st.error(state.one_line(e))
    else:
        done = st.session_state["sens_fit"]
        done["filled"] = fill_explore(name, done["step"]) if done["step"] else None

done = st.session_state.get("sens_fit")
if done and done["model"] == name and done["technique"] == technique:
    f = done["fit"]
    unit = {"prune": "sparsity", "lowrank": "rank ratio"}.get(technique, "bits")
    st.dataframe(pd.DataFrame([{"layer": k, unit: (f"{v * 100:g} %" if technique == "prune" else
                                                   f"{v:g}" if technique == "lowrank" else
                                                   ("float (32)" if v >= 32 else f"{int(v)}"))}
                               for k, v in f["choice"].items()]), hide_index=True)
    m1, m2, m3 = st.columns(3)
    m1.metric(f"File size ({f['size_kind']})", f"{f['size_bytes'] / 1024:,.1f} KB",
              f"{f['size_bytes'] / f['baseline_size_bytes']:.2f}x of baseline", delta_color="off", delta_arrow="off")
    m2.metric(f"Calibration {facts['metric']} (all layers together)", state.metric_text(f["accuracy"], facts),
              state.metric_delta(f["accuracy"], f["baseline_accuracy"], facts), delta_color=state.delta_color(facts))
    m3.metric("Smallest reachable size", f"{f['min_size_bytes'] / 1024:,.1f} KB")
    if f.get("test_accuracy") is not None:  # the fit sees only the calibration split: the test split beside it
        st.caption(f"Test split: {facts['metric']} {state.metric_text(f['test_baseline_accuracy'], facts)} -> "
                   f"{state.metric_text(f['test_accuracy'], facts)} ({f['test_drop_points']:.2f} "
                   f"{'points lost' if up else '% worse'}; {f['calibration_drop_points']:.2f} on the calibration "
                   "split).")
    if f.get("split_note"):
        st.warning(f["split_note"])
    if done.get("filled"):
        st.success(f"Filled the Explore page's controls ({done['filled']}, one value per layer). Go to Explore to "
                   f"see size, {facts['metric']} and latency on the test split.")
        try:
            st.page_link("pages/explore.py", label="Go to Explore", icon=":material/tune:")
        except Exception:  # the link needs the router; the message above says where to go
            pass
    else:
        st.info("This fit keeps every layer as it is; there is nothing to fill in on the Explore page.")
    st.download_button("Download the explicit per-layer recipe (YAML)", done["recipe"],
                       file_name=f"fit-{name}-{technique}.yaml", mime="text/yaml", key="s_download")
    with st.expander("Explicit recipe"):
        st.code(done["recipe"], language="yaml")
