"""Learn: knowledge distillation, a teacher's softmax softened by the temperature, and when it actually helps."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

import charts
import state
from benchmarks import distillation as bench
from compression_core import inputs as I
from compression_core import predict
from compression_core.recipe import apply_recipe, load_recipe, recipe_to_yaml

st.title("Learn: knowledge distillation")
left, right = st.columns([1, 2], gap="large")
with left:
    st.markdown(
        "**Distillation** trains a small *student* to match a large *teacher*'s output distribution, not only the "
        "labels (Hinton et al. 2015, *Distilling the Knowledge in a Neural Network*).\n\n"
        "The teacher's logits are divided by a **temperature T** before the softmax. At T = 1 the teacher is almost "
        "sure (one tall bar); at higher T the small probabilities grow and show *which wrong classes look similar* "
        "(a 3 that resembles an 8): this 'dark knowledge' is what the student learns from. The loss mixes "
        "`alpha * T^2 * KL(teacher_T || student_T)` with `(1 - alpha) * cross-entropy(labels)`.\n\n"
        "Move the slider to soften the teacher's answer for one test example."
    )
    refs = state.models()
    teacher = st.selectbox("Teacher", refs, key="ld_t", index=state.default_index(refs), format_func=state.label)
    f = state.facts(teacher)
    if not f["classification"]:
        st.info(f"{state.label(teacher)} does not predict classes: pick a classifier to see its soft targets.")
        st.stop()
    idx = st.slider("Test example", 0, min(50, f["test_items"] - 1), 3, key="ld_idx")
    temperature = st.slider("Temperature T", 1.0, 20.0, 4.0, 0.5, key="ld_T")
with right:
    wl = state.baseline(teacher)
    logits = predict(wl.model, I.take(wl.test.x, slice(idx, idx + 1)))[0]  # (classes,)
    st.plotly_chart(charts.learn_softmax(logits.numpy(), temperature, f["class_names"]), key="ld_plot")
    p = torch.softmax(logits / temperature, 0)
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum())
    names = f["class_names"]
    st.markdown(f"True label **{names[int(wl.test.y[idx])]}**, teacher predicts **{names[int(logits.argmax())]}**. "
                f"Entropy of the soft targets at T = {temperature:g}: {entropy:.2f} nats "
                f"(uniform over {len(names)} classes: {float(torch.log(torch.tensor(float(len(names))))):.2f}).")

st.header("When does distillation help?")
st.markdown(
    "Measured, not assumed: the same student (digits-mlp, freshly initialised) trained **alone** vs **distilled** "
    "from digits-cnn, 3 seeds each, in two regimes (`python -m benchmarks.distillation` runs the same recipes).\n\n"
    "- **All 1,257 training images labelled: no gain.** The student alone already reaches about the teacher's "
    "accuracy on 8x8 digits; the labels carry everything a small MLP can use, so the teacher's soft targets add "
    "nothing measurable (the rows are kept below: a technique that does not help here is a result too).\n"
    f"- **Only {bench.LABELS_PER_CLASS * 10} labelled images (5 per class): a large gain.** Alone, the student "
    "learns from those 50. Distilled, it learns from the teacher's soft targets on all 1,257 training images "
    "(alpha = 1: no label used at all): the teacher's knowledge reaches the student through images nobody "
    "labelled. This is where distillation pays in practice: labels are scarce, unlabelled data and a trained "
    "teacher are not."
)


@st.cache_data(show_spinner=False)
def comparison(seeds: int) -> list[dict]:
    """The benchmark's digits rows (both regimes), run once per process."""
    rows = []
    for regime, pairs in bench.REGIMES.items():
        for row in pairs:
            if row[0] != "digits-mlp":
                continue
            for mode in ("alone", "distilled"):
                errs = []
                for seed in range(seeds):
                    r = apply_recipe(load_recipe(bench.recipes(regime, row, seed)[mode]), with_latency=False,
                                     measure_before=False)
                    errs.append(round((1 - r.after.accuracy) * len(state.baseline("digits-mlp").test)))
                rows.append({"regime": regime, "mode": mode, "errors": errs,
                             "labels": bench._labels_used(regime, mode, bench.recipes(regime, row, 0)[mode]["model"]),
                             "mean": sum(errs) / len(errs)})
    return rows


if st.button("Run the comparison now (3 seeds x 4 trainings, about a minute)", key="ld_run") or \
        st.session_state.get("ld_done"):
    try:
        with st.spinner("training 12 students..."):
            rows = comparison(3)
        st.session_state["ld_done"] = True
    except Exception as e:  # one line, never a traceback
        st.error(state.one_line(e))
        rows = []
    if rows:
        n_test = len(state.baseline("digits-mlp").test)
        fig = go.Figure()
        for mode, color in (("alone", charts.BEFORE), ("distilled", charts.AFTER)):
            sub = [r for r in rows if r["mode"] == mode]
            fig.add_bar(name=f"student {mode}", x=[r["regime"].replace("-", " ") for r in sub],
                        y=[r["mean"] for r in sub], marker_color=color, text=[f"{r['mean']:.1f}" for r in sub],
                        textposition="inside", insidetextanchor="end",  # clear of the min-max bars above
                        error_y=dict(type="data", symmetric=False,
                                     array=[max(r["errors"]) - r["mean"] for r in sub],
                                     arrayminus=[r["mean"] - min(r["errors"]) for r in sub]))
        fig.update_layout(title=dict(text=f"Test errors of {n_test} (mean of 3 seeds; bars: min-max)", x=0.0),
                          yaxis_title="misclassified test images", barmode="group", height=340,
                          legend=dict(orientation="h", y=-0.2), margin=dict(l=50, r=20, t=50, b=40))
        c1, c2 = st.columns([3, 2])
        c1.plotly_chart(fig, key="ld_regimes", config={"displayModeBar": False})
        c2.dataframe(pd.DataFrame([{"regime": r["regime"], "student": r["mode"], "labels used": r["labels"],
                                    "errors (3 seeds)": ", ".join(map(str, r["errors"])),
                                    "mean": round(r["mean"], 1)} for r in rows]), hide_index=True)
else:
    st.caption("Press the button to train the students here; it takes about a minute on a shared machine.")

with st.expander("The recipes (run them with `python -m compression_core apply FILE`)"):
    row = bench.REGIMES["few-labels"][0]
    for mode, r in bench.recipes("few-labels", row, 0).items():
        st.markdown(f"**Few labels, student {mode}:**")
        st.code(recipe_to_yaml(load_recipe(r)), language="yaml")
