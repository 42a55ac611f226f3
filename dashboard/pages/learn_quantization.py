"""Learn: quantization, a signal rounded to n bits as the slider moves."""

import numpy as np
import pandas as pd
import streamlit as st
import torch

import charts
import state

st.title("Learn: quantization")
left, right = st.columns([1, 2], gap="large")
with left:
    st.markdown(
        "**Quantization** stores each number with fewer bits: the range `[min, max]` is cut into `2^bits` evenly "
        "spaced levels and every value is rounded to the nearest one, `q = round(x / scale) + zero_point`, "
        "`x' = (q - zero_point) * scale`. The error per value is at most `scale / 2` (Jacob et al. 2018).\n\n"
        "- *int8* (4x smaller than fp32) usually costs well under a point of accuracy.\n"
        "- Below ~4 bits accuracy often collapses: the levels are too coarse.\n"
        "- *Simulated* (fake) quantization rounds the values but keeps them in fp32: it predicts accuracy, it does "
        "not make the file smaller. Real int8/int4 storage does.\n"
        "- Whether int8 is *faster* depends on the CPU and the runtime. " + state.cpu().int8_sentence() +
        " (Detected on this machine: " + state.cpu().summary() + ".)\n\nMove the slider: the staircase has "
        "`2^bits` steps."
    )
    bits = st.slider("Bits", 2, 16, 3, key="lq_bits")
with right:
    x = torch.sin(torch.linspace(0, 2 * np.pi, 400)) * torch.linspace(0.3, 1.0, 400)  # (400,)
    lo, hi = float(x.min()), float(x.max())
    qmax = 2**bits - 1
    scale = (hi - lo) / qmax
    zero_point = int(round(-lo / scale))
    q = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, qmax)  # torch's own rounding
    err = float((q - x).abs().max())
    st.plotly_chart(charts.learn_quant_levels(x.numpy(), q.numpy(), bits), key="lq_plot")
    st.markdown(f"scale = {scale:.5f}; max |error| = **{err:.5f}** (bound scale/2 = {scale / 2:.5f}).")
    rows = []
    for b in (16, 8, 6, 4, 3, 2):
        s = (hi - lo) / (2**b - 1)
        qb = torch.fake_quantize_per_tensor_affine(x, s, int(round(-lo / s)), 0, 2**b - 1)
        rows.append({"bits": b, "levels": 2**b, "size vs fp32": f"{b / 32:.3f}x",
                     "max |error|": f"{float((qb - x).abs().max()):.2e}"})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
