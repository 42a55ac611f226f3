"""Experiments: every configuration tried in this session, compared relative to each model's own baseline, every
latency timing with its conditions, and two rows side by side."""

import pandas as pd
import streamlit as st

import charts
import state
import store


def table_view(df: pd.DataFrame, one_model: bool) -> tuple[pd.DataFrame, dict]:
    """The history table as shown: the sparse/simulated size in one column and the latest timing in words, columns
    only where some row has a value, widths in pixels, so it fits the page at 1280 px without a horizontal scroll
    (non-zero parameters and the rest are in "Side by side" below)."""
    view = df.copy()
    view["smaller_kb"] = pd.to_numeric(view["sparse_kb"].where(view["sparse_kb"].notna(), view["simulated_kb"]),
                                       errors="coerce")  # numbers, so a missing one is blank (not "None")
    view["latency"] = [None if base or pd.isna(r) else f"{r:.2f}x" + (f" {v}" if isinstance(v, str) else "")
                       for r, v, base in zip(view["latency_ratio"], view["latency_verdict"], view["baseline"])]
    cols = ["id"] + ([] if one_model else ["model"]) + ["label", "value", "change_pt", "size_kb"]
    cols += ["smaller_kb"] if view["smaller_kb"].notna().any() else []
    cols += ["size_ratio"] + (["latency"] if view["latency"].notna().any() else [])
    config = {
        "id": st.column_config.NumberColumn("row", format="%d", width=50),
        "model": st.column_config.TextColumn("model", width=90),
        "label": st.column_config.TextColumn("configuration", width=170),
        "value": st.column_config.NumberColumn("metric", format="%.2f", width=72,
                                               help="the model's own metric (accuracy in % unless its workload "
                                                    "says otherwise; perplexity as the number)"),
        "change_pt": st.column_config.NumberColumn("change", format="%+.2f", width=72,
                                                   help="change against the model's own baseline, positive = better: "
                                                        "points, or for a lower-is-better metric (perplexity) "
                                                        "percent lower"),
        "size_kb": st.column_config.NumberColumn("dense KB", format="%.1f", width=72, help="the dense file"),
        "smaller_kb": st.column_config.NumberColumn("smaller KB", format="%.1f", width=84,
                                                    help="the sparse-encoded or packed file where one exists, else "
                                                         "the theoretical size of a simulated (fake-quant) result"),
        "size_ratio": st.column_config.NumberColumn("size x", format="%.3f", width=64,
                                                    help="the smallest real (or simulated) file, as a multiple of "
                                                         "the model's own baseline"),
        "latency": st.column_config.TextColumn("latency", width=120,
                                               help="the latest timing: after/before ratio and its verdict"),
    }
    return view[cols], {k: v for k, v in config.items() if k in cols}


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

table, table_config = table_view(df, len(pick) == 1)
st.dataframe(table, hide_index=True, width="stretch", column_config=table_config)
st.caption("Sizes: the dense `torch.save` file, the sparse-encoded/packed file where one exists, and the theoretical "
           "size of simulated (fake-quant) results (hollow diamonds below: simulated, not real). Ratios and changes "
           "are relative to each model's own baseline, so models of different sizes share the charts; a change is in "
           "points, or in % lower for a lower-is-better metric such as perplexity (positive: better).")

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
    timings = lat.assign(conditions=[f"{rt}, batch {b}, {t} thread{'s' if t > 1 else ''}"
                                     for rt, b, t in zip(lat["runtime"], lat["batch"], lat["threads"])])
    st.dataframe(timings[["id", "label", "timing", "conditions", "before_ms", "after_ms", "ratio", "ratio_range",
                          "verdict"]], hide_index=True, width="stretch", column_config={  # pixel widths: fits 1280
        "id": st.column_config.NumberColumn("row", format="%d", width=45),
        "label": st.column_config.TextColumn("configuration", width=140),
        "timing": st.column_config.NumberColumn("#", format="%d", width=36, help="timing number"),
        "conditions": st.column_config.TextColumn("conditions", width=160, help="runtime, batch size, threads"),
        "before_ms": st.column_config.NumberColumn("before ms", format="%.4f", width=75),
        "after_ms": st.column_config.NumberColumn("after ms", format="%.4f", width=75),
        "ratio": st.column_config.NumberColumn("after/before", format="%.2f", width=85),
        "ratio_range": st.column_config.TextColumn("middle half", width=80,
                                                   help="middle half of the after/before ratios"),
        "verdict": st.column_config.TextColumn("verdict", width=110)})
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
