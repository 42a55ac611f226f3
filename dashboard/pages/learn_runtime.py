"""Learn: why the runtime decides whether int8 is faster (measured on this machine by the library)."""

import plotly.graph_objects as go
import streamlit as st

import charts
import runtime_lesson
import state

st.title("Learn: runtimes")
ort = state.ort_module()
if ort is None:
    st.info("ONNX Runtime is not installed here: this lesson compares torch with ONNX Runtime.")
    st.stop()


@st.cache_data(show_spinner=False)
def lesson(ref: str) -> tuple[list[dict], str]:
    """The library's measured comparison (rows) and its explanation, once per process and model."""
    rows = ort.runtime_comparison(state.baseline(ref))  # the listed workload (checked by trust), not a reference
    return rows, runtime_lesson.why_runtime_matters(ref, rows=rows)


def chart(rows: list[dict]) -> go.Figure:
    """Speed-up over fp32 in the same runtime, batch 1 and batch 32: above 1 is faster."""
    fig = go.Figure()
    short = {"onnxruntime": "ORT"}
    xs = [f"{short.get(r['runtime'], r['runtime'])}<br>{r['path'].replace(', ', '<br>')}" for r in rows]
    for key, name, color in (("speedup_b1", "batch 1", charts.BEFORE), ("speedup_b32", "batch 32", charts.AFTER)):
        ys = [r[key] for r in rows]
        fig.add_bar(name=name, x=xs, y=ys, marker_color=color, text=[f"{y:.2f}x" for y in ys], textposition="outside",
                    cliponaxis=False)
    fig.add_hline(y=1.0, line_dash="dot", line_color="#555555")
    top = max(max(r["speedup_b1"], r["speedup_b32"]) for r in rows)
    fig.update_layout(title=dict(text="Speed vs fp32 in the same runtime (above 1 = faster; ORT = ONNX Runtime)", x=0.0),
                      yaxis=dict(title="x as fast as fp32", range=[0, top * 1.2]), barmode="group", height=400,
                      xaxis=dict(tickangle=0, automargin=True),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      margin=dict(l=50, r=20, t=80, b=40))
    return fig


cpu = state.cpu()
st.markdown(
    "The same int8 model can be slower or faster than fp32 depending on **what runs it**. This page measures one "
    "model as fp32 and int8 in torch and in ONNX Runtime, right now, on this machine, and explains the numbers.\n\n"
    f"This machine: {cpu.summary()}. {cpu.int8_sentence()}"
)
refs = [r for r in state.models() if state.tensor_input(r)]  # the lesson exports one tensor input to ONNX
pref = "mnist-lenet300" if "mnist-lenet300" in refs else refs[0]
model = st.selectbox("Model", refs, key="lr_model", index=refs.index(pref), format_func=state.label)
if st.button("Measure now (a few seconds)", key="lr_go") or st.session_state.get(f"lr_done_{model}"):
    try:
        with st.spinner("exporting, quantizing and timing in both runtimes..."):
            rows, text = lesson(model)
        st.session_state[f"lr_done_{model}"] = True
        st.plotly_chart(chart(rows), key="lr_chart")
        st.markdown(text)
    except Exception as e:  # one line, never a traceback
        st.error(state.one_line(e))
