"""Learn: why the runtime decides whether int8 is faster (measured on this machine by the library)."""

import streamlit as st

import state

st.title("Learn: runtimes")
ort = state.ort_module()
if ort is None:
    st.info("ONNX Runtime support (compression_core.ort) is not available in this build.")
    st.stop()


@st.cache_data(show_spinner=False)
def lesson(model: str) -> str:
    return ort.why_runtime_matters(model)


st.markdown(
    "The same int8 model can be slower or faster than fp32 depending on **what runs it**. This page measures one "
    "sample model as fp32 and int8 in torch and in ONNX Runtime, right now, on this CPU "
    f"({ort.cpu_summary()}), and explains the numbers."
)
model = st.selectbox("Model", ["mnist-lenet300", "digits-mlp"], key="lr_model")
if st.button("Measure now (a few seconds)", key="lr_go") or st.session_state.get(f"lr_done_{model}"):
    try:
        with st.spinner("exporting, quantizing and timing in both runtimes..."):
            text = lesson(model)
        st.session_state[f"lr_done_{model}"] = True
        st.markdown(text)
    except Exception as e:  # one line, never a traceback
        st.error(state.one_line(e))
