"""Experiments: every configuration tried in this session, Pareto fronts, and two rows side by side."""

import pandas as pd
import streamlit as st

import charts
import state

st.title("Experiments")
rows = state.history()
if not rows:
    st.info("No experiments yet: move a control on the Explore page and every configuration lands here.")
    st.stop()

df = pd.DataFrame(rows)
models = sorted(df["model"].unique())
pick = st.multiselect("Models", models, default=models, key="e_models")
df = df[df["model"].isin(pick)]
shown = df[["id", "model", "label", "accuracy_%", "size_KB", "sparse_KB", "theoretical_KB", "best_KB", "latency_ms",
            "nonzero_params", "simulated"]]
st.dataframe(shown, hide_index=True, width="stretch", column_config={
    "accuracy_%": st.column_config.NumberColumn("accuracy (%)", format="%.2f"),
    "size_KB": st.column_config.NumberColumn("dense file (KB)", format="%.1f"),
    "sparse_KB": st.column_config.NumberColumn("sparse file (KB)", format="%.1f"),
    "theoretical_KB": st.column_config.NumberColumn("theoretical, simulated (KB)", format="%.1f"),
    "best_KB": st.column_config.NumberColumn("smallest (KB)", format="%.1f"),
    "latency_ms": st.column_config.NumberColumn("latency (ms)", format="%.3f"),
})
st.caption("Sizes: the dense `torch.save` file, the sparse-encoded/packed file where one exists, and the theoretical "
           "size of simulated (fake-quant) results (hollow diamonds below: simulated, not real). Latency fills in "
           "once measured on the Explore page.")

ids = list(df["id"])
c1, c2 = st.columns(2)
a = c1.selectbox("Compare row", ids, index=0, key="e_a")
b = c2.selectbox("with row", ids, index=len(ids) - 1, key="e_b")
c1.plotly_chart(charts.pareto_chart(df, "best_KB", "size (KB, smallest real or theoretical)",
                                    "Accuracy vs size", highlight=[a, b]), key="pareto_size")
if df["latency_ms"].notna().any():
    c2.plotly_chart(charts.pareto_chart(df, "latency_ms", "latency (ms, median)", "Accuracy vs latency",
                                        highlight=[a, b]), key="pareto_lat")
else:
    c2.info("Accuracy vs latency appears once latency is measured (Explore page, 'Measure latency').")

ra, rb = df[df["id"] == a].iloc[0], df[df["id"] == b].iloc[0]
fields = ["model", "label", "accuracy_%", "size_KB", "sparse_KB", "theoretical_KB", "best_KB", "latency_ms",
          "nonzero_params", "params", "simulated"]
side = pd.DataFrame({"field": fields, f"row {a}": [ra[f] for f in fields], f"row {b}": [rb[f] for f in fields]})
st.subheader("Side by side")
st.dataframe(side.astype(str), hide_index=True, width="stretch")
if st.button("Clear history", key="e_clear"):
    st.session_state["history"] = []
    st.rerun()
