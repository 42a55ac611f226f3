"""Advise: which quantization method suits this model, with the measured numbers behind the recommendation."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import engines
import state
import techniques as T
from compression_core.advise import advise
from compression_core.timing import TOLERANCE

st.title("Advise: which quantization method for this model?")
st.markdown(
    "The rule of thumb: **recurrent and transformer models** (and plain MLPs) -> **dynamic int8** (weights int8, "
    "activations quantized per batch, no calibration); **CNNs** -> **static int8** (calibrated, whole conv-BN-ReLU "
    "regions in integers); a **CNN whose static accuracy drop is too large** -> **quantization-aware training**. "
    "The advice below is not a table: every candidate is run on the model you pick and measured now "
    "(test accuracy, serialized size, latency at batch 32 on 1 thread, ratios against fp32 timed in the same run)."
)


@st.cache_data(show_spinner=False, max_entries=32)
def advice_view(ref: str, max_drop: float) -> dict:
    """The advice as plain data, cached per (model, threshold) for this process (nothing on disk)."""
    return advise(state.baseline(ref), max_drop_pt=max_drop).to_json_dict()


c1, c2 = st.columns([1, 1])
refs = state.models()
ref = c1.selectbox("Model", refs, key="adv_model", index=state.default_index(refs), format_func=state.label)
try:  # the metric's units and direction (perplexity: lower is better; its drop is a rise in % of fp32)
    mf = state.facts(ref)
except Exception:  # the advice below says what is wrong with the model, in one line
    mf = {"metric": "accuracy", "percent": True, "higher_is_better": True}
up = mf.get("higher_is_better", True)
drop_name = "accuracy drop (points)" if up else f"{mf['metric']} rise (% of fp32)"
max_drop = c2.slider("Largest acceptable accuracy drop (points)" if up else
                     f"Largest acceptable {mf['metric']} rise (% of fp32)", 0.0, 5.0, 1.0, step=0.1, key="adv_drop")
try:
    with st.spinner("quantizing and measuring each candidate..."):
        a = advice_view(ref, float(max_drop))
except Exception as e:  # a model no candidate can handle: one line, never a traceback
    st.error(state.one_line(e))
    st.stop()
name = state.label(ref)

labels = {c["method"]: c["label"] for c in a["candidates"]}
if a["recommended"] == "none":
    st.warning(f"**Keep fp32** for {name} ({a['model_type']}): {a['reason']}.")
else:
    st.success(f"**{labels[a['recommended']]}** for {name} ({a['model_type']}): {a['reason']}.")
if a.get("skipped"):  # a method the library refuses for this model: named with the reason, not an error
    st.caption("Not applicable to this model: " + "; ".join(
        f"**{T.by_kind(m).label if T.by_kind(m) else m}**: {why}" for m, why in a["skipped"].items()))

rows = [a["baseline"]] + a["candidates"]
df = pd.DataFrame([{  # a drop is a negative change: -0.28 points, never "+0.28" for a loss (a perplexity rise: +)
    "method": r["label"], "accuracy %": 100 * r["accuracy"] if mf["percent"] else r["accuracy"],
    "accuracy change (points)": -r["drop_pt"] if up else r["drop_pt"],
    "size KB": r["size_bytes"] / 1024, "size x fp32": r["size_ratio"], "latency ms (b32)": r["latency_ms"],
    "latency x fp32": r["latency_ratio"], "within threshold": r["within_threshold"],
    "recommended": r["method"] == a["recommended"],
} for r in rows])
st.dataframe(df, hide_index=True, width="stretch", column_config={  # short headers: 9 columns fit at 1280 px
    "method": st.column_config.TextColumn("method", width="small"),
    "accuracy %": st.column_config.NumberColumn("accuracy %" if mf["metric"] == "accuracy" else mf["metric"] + (
        " %" if mf["percent"] else ""), format="%.2f", width="small"),
    "accuracy change (points)": st.column_config.NumberColumn(
        "change (pt)" if up else "change (%)", format="%+.2f", width="small",
        help="accuracy change in points against fp32" if up else
        f"{mf['metric']} change in % of fp32's (lower is better: + is worse)"),
    "size KB": st.column_config.NumberColumn("size KB", format="%.1f", width="small",
                                             help="bytes of the saved state_dict, as Explore's 'File size (dense)'"),
    "size x fp32": st.column_config.NumberColumn("size x", format="%.3f", width="small", help="size / fp32 size"),
    "latency ms (b32)": st.column_config.NumberColumn("ms (b32)", format="%.3f", width="small",
                                                      help="latency per call at batch 32, 1 thread"),
    "latency x fp32": st.column_config.NumberColumn("latency x", format="%.2f", width="small",
                                                    help="latency / fp32 latency, timed in the same run"),
    "within threshold": st.column_config.CheckboxColumn("within", width="small",
                                                        help=f"{drop_name} within the threshold"),
    "recommended": st.column_config.CheckboxColumn("chosen", width="small", help="the recommended method")})
st.caption("Each candidate quantizes the whole model, the classifier included (one int8 region end to end). Explore "
           "leaves the classifier alone unless 'Also compress the classifier' is ticked, so its file is a little "
           "bigger there; open a method in Explore below to get exactly this configuration and these numbers.")
in_explore = [c for c in a["candidates"] if T.by_kind(c["method"]) is not None]
if in_explore:
    o1, o2 = st.columns([2, 1], vertical_alignment="bottom")
    method = o1.selectbox("Method to open in Explore", [c["method"] for c in in_explore], key="adv_open_pick",
                          index=next((i for i, c in enumerate(in_explore) if c["method"] == a["recommended"]), 0),
                          format_func=labels.get)
    if o2.button("Open in Explore", key="adv_open", width="stretch"):
        ss = st.session_state
        t = T.by_kind(method)
        ss["x_model"] = ref
        ss[f"x_prune_{ref}"] = "none"
        ss["x_quant"] = t.label
        ss[f"x_cls_{ref}"] = True  # the classifier too, as the candidate was measured
        ss.pop(f"x_layers_{ref}", None)  # every layer
        for s_ in T.specs(t):  # the candidate's settings are the config's defaults
            ss.pop(f"x_{t.kind}_{s_.name}", None)
        st.switch_page("pages/explore.py")

st.subheader("Slower than fp32? What is faster here")
slow = [c for c in a["candidates"] if c["latency_ratio"] > 1 + TOLERANCE]
for c in slow:  # the advice's own timing (batch 32, same run): said in one line, what is faster on request
    st.warning(f"slower: {c['label']} runs {c['latency_ratio']:.1f}x slower than fp32 "
               f"{engines.where('torch', a['batch_size'], a['threads'])}; 'Find a faster engine' times the other "
               "compressed paths against it")
e1, e2 = st.columns([2, 1], vertical_alignment="bottom")
timed = [c for c in a["candidates"] if not (T.by_kind(c["method"]) and T.by_kind(c["method"]).ui.trains)]
if timed:
    default_pick = next((i for i, c in enumerate(timed) if c in slow), 0)
    pick = e1.selectbox("Method to compare with the other engines", [c["method"] for c in timed], key="adv_engine_pick",
                        index=default_pick, format_func=labels.get)
    with e2:
        res = engines.faster_panel(ref, state.recipe_dict(ref, [{"kind": pick}]), a["batch_size"], a["threads"],
                                   label=labels[pick], show=False)
    if res is not None:
        engines.show_result(res)
    else:
        st.caption("A job: the method, fp32 and every other compressed path (ONNX Runtime QDQ static and dynamic "
                   "int8, MatMulNBits int4, torch int8) timed together on this machine; the same comparison "
                   "`compression-lab apply` prints and Explore's latency panel offers.")

fig = go.Figure()
names = [r["label"] for r in rows]
colors = ["#2ca02c" if r["method"] == a["recommended"] else ("#7f7f7f" if r["method"] == "fp32" else "#1f77b4")
          for r in rows]
fig.add_bar(name="size x fp32", x=names, y=[r["size_ratio"] for r in rows], marker_color=colors, offsetgroup=0,
            texttemplate="size %{y:.2f}x", textposition="outside", cliponaxis=False)
fig.add_bar(name="latency x fp32 (batch 32, 1 thread)", x=names, y=[r["latency_ratio"] for r in rows],
            marker_color=colors, marker_pattern_shape="/", offsetgroup=1, texttemplate="latency %{y:.2f}x",
            textposition="outside", cliponaxis=False)
fig.add_scatter(name=drop_name, x=names, y=[r["drop_pt"] for r in rows], yaxis="y2",
                mode="markers+lines", marker=dict(size=11, color="#d62728"), line=dict(color="#d62728"))
fig.add_scatter(name=f"largest acceptable {'drop' if up else 'rise'}: {a['max_drop_pt']:g} {'pt' if up else '%'}",
                x=names,
                y=[a["max_drop_pt"]] * len(names), yaxis="y2", mode="lines", hoverinfo="skip",
                line=dict(color="#d62728", dash="dot"))  # in the legend, not written over the bars' labels
fig.update_layout(title=f"Measured candidates for {name} (green = recommended)", barmode="group",
                  yaxis=dict(title="ratio vs fp32 (lower is better)", range=[0, 1.2 * max(
                      max(max(r["size_ratio"], r["latency_ratio"] or 0) for r in rows), 1.0)]),
                  # both axes start at 0 (fp32's drop of 0 sits on the floor) and the threshold is always in view
                  yaxis2=dict(title=drop_name, overlaying="y", side="right", showgrid=False,
                              tickmode="auto", tickformat=".2~f", color="#d62728",
                              range=[min(0.0, 1.2 * min(r["drop_pt"] for r in rows)),
                                     1.25 * max(max(r["drop_pt"] for r in rows), a["max_drop_pt"], 0.1)]),
                  legend=dict(orientation="h", y=-0.2), margin=dict(t=60))
st.plotly_chart(fig, key="adv_chart")
st.caption(f"Latency: torch.utils.benchmark median at batch {a['batch_size']}, {a['threads']} thread; the machine "
           "may be shared, so compare the ratios (timed in the same run), not absolute milliseconds. Size: bytes of "
           "the saved state_dict. QAT is measured only when static int8 misses the threshold on a CNN.")
