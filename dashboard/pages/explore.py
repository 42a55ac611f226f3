"""Explore: pick a sample model and see its measurements."""

import pandas as pd
import streamlit as st

import sample_models
from compression_core import measure


@st.cache_resource
def baseline(name: str):
    return sample_models.load(name)


st.title("Compression Lab")
name = st.selectbox("Model", sample_models.MODEL_NAMES, index=sample_models.MODEL_NAMES.index("digits-cnn"))
sm = baseline(name)
stats = measure(sm.model, sm.data, name=name, min_run_time=0.1)
c1, c2, c3 = st.columns(3)
c1.metric("Size", f"{stats.size_bytes / 1024:.1f} KB")
c2.metric("Latency (batch 1, 1 thread)", f"{stats.latency_ms:.3f} ms")
c3.metric("Accuracy (test)", f"{stats.accuracy * 100:.2f} %")
st.dataframe(pd.DataFrame([layer.model_dump() for layer in stats.layers]), hide_index=True)
