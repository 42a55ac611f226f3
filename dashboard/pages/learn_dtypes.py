"""Learn: data types: fp32, fp16, bf16, int8, uint8, int4: bits, range, precision, and one tensor cast to each."""

import pandas as pd
import streamlit as st
import torch

import charts
import state

st.title("Learn: data types")
st.markdown(
    "Every weight is stored in some number format. Floating-point types keep a sign, an exponent (range) and a "
    "mantissa (precision); integer types keep evenly spaced levels and need a **scale** (and for unsigned types a "
    "**zero point**) to map them back to real values. fp16 keeps precision but a small range; bf16 keeps fp32's "
    "range with less precision; int8 and int4 trade both for 4x / 8x smaller storage."
)


def float_row(name: str, dtype: torch.dtype) -> dict:
    f = torch.finfo(dtype)
    return {"type": name, "bits": f.bits, "range": f"±{f.max:.3g}", "smallest normal": f"{f.tiny:.3g}",
            "precision (eps: step after 1.0)": f"{f.eps:.3g}", "kind": "floating point"}


def int_row(name: str, bits: int, lo: int, hi: int) -> dict:
    return {"type": name, "bits": bits, "range": f"{lo} .. {hi} (x scale)", "smallest normal": "-",
            "precision (eps: step after 1.0)": f"1 level = scale (range / {hi - lo})", "kind": "integer + scale"}


def iinfo_row(name: str, dtype: torch.dtype) -> dict:
    i = torch.iinfo(dtype)
    return int_row(name, i.bits, i.min, i.max)


def signed_row(name: str, bits: int) -> dict:
    """A signed integer type torch has no dtype for (int4): its range follows from the bit width."""
    return int_row(name, bits, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


table = pd.DataFrame([
    float_row("fp32", torch.float32), float_row("fp16", torch.float16), float_row("bf16", torch.bfloat16),
    iinfo_row("int8", torch.int8), iinfo_row("uint8", torch.uint8), signed_row("int4", 4),
])
st.dataframe(table, hide_index=True, width="stretch")

st.subheader("One tensor cast to each type")
c1, c2 = st.columns([1, 2], gap="large")
with c1:
    refs = state.models()
    name = st.selectbox("Weights of", refs, key="ldt_model", index=state.default_index(refs), format_func=state.label)
    layers = [r["name"] for r in state.baseline_view(name)["stats"]["layers"] if "Norm" not in r["type"]
              and r["params"] >= 64]
    layer = st.selectbox("Layer", layers, key="ldt_layer")
    mult = st.select_slider("Multiply the weights by", [1e-6, 1e-3, 1.0, 1e3, 1e5, 1e6], value=1.0, key="ldt_mult",
                            help="large or tiny values show where fp16's small range over- or underflows")
w = torch.from_numpy(state.layer_weights(None, name, layer)).reshape(-1) * mult  # (n,)
i8, u8 = torch.iinfo(torch.int8), torch.iinfo(torch.uint8)
i4_min, i4_max = -(2 ** 3), 2 ** 3 - 1  # int4: no torch dtype, the range follows from 4 bits
scale8 = float(w.abs().max()) / i8.max or 1.0
lo, hi = float(w.min()), float(w.max())
scale_u8 = (hi - lo) / (u8.max - u8.min) or 1.0
scale4 = float(w.abs().max()) / i4_max or 1.0
casts = {
    "fp32": w,
    "fp16": w.half().float(),
    "bf16": w.bfloat16().float(),
    "int8": torch.fake_quantize_per_tensor_affine(w, scale8, 0, i8.min, i8.max),
    "uint8": torch.fake_quantize_per_tensor_affine(w, scale_u8, int(round(-lo / scale_u8)), u8.min, u8.max),
    "int4": torch.fake_quantize_per_tensor_affine(w, scale4, 0, i4_min, i4_max),
}
rows = []
for dtype, v in casts.items():
    err = (v - w).abs()
    rows.append({"dtype": dtype, "max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()),
                 "non-finite values": int((~torch.isfinite(v)).sum()), "values that became 0": int(((v == 0) & (w != 0)).sum())})
with c2:
    st.plotly_chart(charts.learn_dtype_errors([r for r in rows if r["dtype"] != "fp32"]), key="ldt_plot")
    st.caption(f"{w.numel():,} weights of {layer} x {mult:g}; int types use one per-tensor scale (symmetric for "
               "int8/int4, min-max with a zero point for uint8). fp16 overflows to inf above 65504 and flushes tiny "
               "values to zero; bf16 never overflows here but keeps only ~3 significant digits.")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={  # full width: no column cut off
    "max_abs_error": st.column_config.NumberColumn("max |error|", format="%.2e"),
    "mean_abs_error": st.column_config.NumberColumn("mean |error|", format="%.2e")})
