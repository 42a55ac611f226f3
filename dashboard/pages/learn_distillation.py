"""Learn: knowledge distillation, a teacher's softmax softened by the temperature, and when it actually helps."""

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

import charts
import state
from compression_core import inputs as I
from compression_core import predict
from compression_core.recipe import load_recipe, recipe_to_yaml

# Measured by the repository's benchmark (`python -m benchmarks.distillation --json --seeds 3`) and shipped with the
# dashboard: the page shows those numbers instead of training 12 students on a server a class shares.
RESULTS = Path(__file__).resolve().parent.parent / "data" / "distillation.json"

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


@st.cache_data(show_spinner=False)
def measured() -> dict:
    """The benchmark's output shipped with the dashboard: {command, environment, rows: [...]}."""
    return json.loads(RESULTS.read_text())


try:
    results = measured()
    few = {r["mode"]: r for r in results["rows"] if r["regime"] == "few-labels"}
    student, teacher = few["distilled"]["student"], few["distilled"]["teacher"]
    rows = [r for r in results["rows"] if r["student"] == student]  # the same student in both regimes
    everything = next(r for r in rows if r["regime"] == "all-labels" and r["mode"] == "alone")
except (OSError, ValueError, KeyError, StopIteration) as e:  # one line, never a traceback
    st.error(f"distillation: the measured results ({RESULTS.name}) cannot be read ({type(e).__name__}: {e})")
    st.stop()
n_all, n_few = everything["labelled_images"], few["alone"]["labelled_images"]
classes = len(state.facts(teacher)["class_names"]) if teacher in state.models() else None
per_class = f" ({n_few // classes} per class)" if classes else ""
st.markdown(
    f"Measured, not assumed: the same student ({student}, freshly initialised) trained **alone** vs **distilled** "
    f"from {teacher}, {few['distilled']['seeds']} seeds each, in two regimes.\n\n"
    f"- **All {n_all:,} training images labelled: no gain.** The student alone already reaches about the teacher's "
    "accuracy; the labels carry everything a small MLP can use, so the teacher's soft targets add nothing "
    "measurable (the rows are kept below: a technique that does not help here is a result too).\n"
    f"- **Only {n_few} labelled images{per_class}: a large gain.** Alone, the student learns from those {n_few}. "
    f"Distilled, it learns from the teacher's soft targets on all {few['distilled']['images_seen']:,} training images "
    f"(alpha = 1: no label used at all): the teacher's knowledge reaches the student through images nobody "
    "labelled. This is where distillation pays in practice: labels are scarce, unlabelled data and a trained "
    "teacher are not."
)

n_test = rows[0]["test_samples"]
seeds = rows[0]["seeds"]
fig = go.Figure()
for mode, color in (("alone", charts.BEFORE), ("distilled", charts.AFTER)):
    sub = [r for r in rows if r["mode"] == mode]
    fig.add_bar(name=f"student {mode}", x=[r["regime"].replace("-", " ") for r in sub],
                y=[r["errors_mean"] for r in sub], marker_color=color, text=[f"{r['errors_mean']:.1f}" for r in sub],
                textposition="inside", insidetextanchor="end",  # clear of the min-max bars above
                error_y=dict(type="data", symmetric=False,
                             array=[max(r["errors"]) - r["errors_mean"] for r in sub],
                             arrayminus=[r["errors_mean"] - min(r["errors"]) for r in sub]))
fig.update_layout(title=dict(text=f"Test errors of {n_test} (mean of {seeds} seeds; bars: min-max)", x=0.0),
                  yaxis_title="misclassified test images", barmode="group", height=340,
                  legend=dict(orientation="h", y=-0.2), margin=dict(l=50, r=20, t=50, b=40))
c1, c2 = st.columns([3, 2])
c1.plotly_chart(fig, key="ld_regimes", config={"displayModeBar": False})
c2.dataframe(pd.DataFrame([{"regime": r["regime"], "student": r["mode"], "labels used": r["labelled_images"],
                            f"errors ({seeds} seeds)": ", ".join(map(str, r["errors"])),
                            "mean": round(r["errors_mean"], 1)} for r in rows]), hide_index=True)
env = results.get("environment", {})
st.caption(f"Measured by the repository's benchmark (`{results.get('command', 'python -m benchmarks.distillation')}`) "
           f"on {env.get('cpu_count', '?')} CPU cores with torch {env.get('torch', '?')}, and shipped with the "
           f"dashboard ({RESULTS.parent.name}/{RESULTS.name}). Run the recipes below (or the benchmark, from a "
           "checkout) to measure them on your machine.")

with st.expander("The recipes (run them with `python -m compression_core apply FILE`)"):
    for mode in ("alone", "distilled"):
        recipe = few[mode]["recipe"]
        st.markdown(f"**Few labels, student {mode}:**")
        st.code(recipe_to_yaml(load_recipe(recipe)), language="yaml")
        if ":" in str(recipe["model"]):
            st.caption(f"`{recipe['model']}` is the benchmark's workload: the student with only {n_few} labelled "
                       "training images. It imports from a checkout of the repository.")
