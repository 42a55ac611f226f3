"""Experiments: every configuration tried in this session, compared relative to each model's own baseline, every
latency timing with its conditions, and two rows side by side."""

import pandas as pd
import streamlit as st

import charts
import state
import store

st.title("Experiments")
rows = state.history()
if not rows:
    st.info("No experiments yet: on the Explore page, 'Save to history' keeps a configuration here (training runs, "
            "recipe imports and latency timings are kept too).")
    st.stop()

df = state.experiments_frame(rows)
models = list(dict.fromkeys(df["model"]))
pick = st.multiselect("Models", models, default=models, key="e_models")
df = df[df["model"].isin(pick)]
SMALL = "small"  # 12 columns: small widths and short headers so the table fits at 1280 px without scrolling
st.dataframe(df[["id", "model", "label", "value", "change_pt", "size_kb", "sparse_kb", "simulated_kb",
                 "size_ratio", "nonzero_params", "latency_ratio", "latency_verdict"]],
             hide_index=True, width="stretch", column_config={
    "id": st.column_config.NumberColumn("row", format="%d", width=SMALL),
    "model": st.column_config.TextColumn("model", width=SMALL),
    "label": st.column_config.TextColumn("configuration", width="medium"),
    "value": st.column_config.NumberColumn("metric %", format="%.2f", width=SMALL,
                                           help="the model's own metric (accuracy unless its workload says otherwise)"),
    "change_pt": st.column_config.NumberColumn("change pt", format="%+.2f", width=SMALL,
                                               help="change against the model's own baseline, in points"),
    "size_kb": st.column_config.NumberColumn("dense KB", format="%.1f", width=SMALL, help="the dense file"),
    "sparse_kb": st.column_config.NumberColumn("sparse KB", format="%.1f", width=SMALL,
                                               help="the sparse-encoded or packed file, where one exists"),
    "simulated_kb": st.column_config.NumberColumn("simul. KB", format="%.1f", width=SMALL,
                                                  help="the theoretical size of a simulated (fake-quant) result"),
    "size_ratio": st.column_config.NumberColumn("size x", format="%.3f", width=SMALL,
                                                help="the smallest real (or simulated) file, as a multiple of the "
                                                     "model's own baseline"),
    "nonzero_params": st.column_config.NumberColumn("non-zero", format="localized", width=SMALL,
                                                    help="non-zero parameters"),
    "latency_ratio": st.column_config.NumberColumn("latency x", format="%.2f", width=SMALL,
                                                   help="the latest timing's after/before ratio (timed together)"),
    "latency_verdict": st.column_config.TextColumn("latency", width=SMALL, help="the latest timing's verdict"),
})
st.caption("Sizes: the dense `torch.save` file, the sparse-encoded/packed file where one exists, and the theoretical "
           "size of simulated (fake-quant) results (hollow diamonds below: simulated, not real). Ratios and changes "
           "are relative to each model's own baseline, so models of different sizes share the charts.")

ids = list(df["id"])
c1, c2 = st.columns(2)
a = c1.selectbox("Compare row", ids, index=0, key="e_a")
b = c2.selectbox("with row", ids, index=len(ids) - 1, key="e_b")
c1.plotly_chart(charts.pareto_chart(df, "size_ratio", "smallest file (x of its baseline)",
                                    "Metric change vs size", highlight=[a, b]), key="pareto_size")
if df["latency_ratio"].notna().sum() > df["baseline"].sum():
    c2.plotly_chart(charts.pareto_chart(df, "latency_ratio", "latency (x of its baseline; bars: middle half)",
                                        "Metric change vs latency", highlight=[a, b],
                                        error_x=("latency_ratio_low", "latency_ratio_high")), key="pareto_lat")
else:
    c2.info("Metric change vs latency appears once latency is timed (Explore page, 'Time before vs after').")

lat = state.latency_frame([r for r in rows if r["model"] in pick])
if len(lat):
    st.subheader("Every latency timing")
    st.dataframe(lat, hide_index=True, width="stretch", column_config={
        "id": st.column_config.NumberColumn("row", format="%d", width=SMALL),
        "model": st.column_config.TextColumn("model", width=SMALL),
        "label": st.column_config.TextColumn("configuration", width="medium"), "rounds": None,
        "timing": st.column_config.NumberColumn("#", format="%d", width=SMALL, help="timing number"),
        "runtime": st.column_config.TextColumn("runtime", width=SMALL),
        "batch": st.column_config.NumberColumn("batch", width=SMALL),
        "threads": st.column_config.NumberColumn("threads", width=SMALL),
        "before_ms": st.column_config.NumberColumn("before ms", format="%.4f", width=SMALL),
        "after_ms": st.column_config.NumberColumn("after ms", format="%.4f", width=SMALL),
        "ratio": st.column_config.NumberColumn("after/before", format="%.2f", width=SMALL),
        "ratio_range": st.column_config.TextColumn("middle half", width=SMALL,
                                                   help="middle half of the after/before ratios"),
        "verdict": st.column_config.TextColumn("verdict", width=SMALL)})
    st.caption("Each timing ran before and after alternately in the same second, with the batch, threads and runtime "
               "shown; timing again adds a row.")

ra, rb = df[df["id"] == a].iloc[0], df[df["id"] == b].iloc[0]


def shown(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int,)) or (hasattr(v, "is_integer") and float(v).is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    return f"{v:g}" if isinstance(v, float) else str(v)


side = pd.DataFrame({"": list(state.FIELD_LABELS.values()),
                     f"row {a}": [shown(ra[k]) for k in state.FIELD_LABELS],
                     f"row {b}": [shown(rb[k]) for k in state.FIELD_LABELS]})
st.subheader("Side by side")
st.dataframe(side, hide_index=True, width="stretch")
store.history_tools(rows)  # rename, delete, export; kept in the database across reloads
