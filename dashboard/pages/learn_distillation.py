"""Learn: knowledge distillation, a teacher's softmax softened by the temperature."""

import streamlit as st
import torch

import charts
import state
from compression_core import predict

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
        "Move the slider to soften the teacher's answer for one test digit."
    )
    teacher = st.selectbox("Teacher", state.DIGITS_MODELS, index=state.DIGITS_MODELS.index("digits-cnn"), key="ld_t")
    idx = st.slider("Test image", 0, 50, 3, key="ld_idx")
    temperature = st.slider("Temperature T", 1.0, 20.0, 4.0, 0.5, key="ld_T")
with right:
    sm = state.baseline(teacher)
    logits = predict(sm.model, sm.data.test.x[idx : idx + 1])[0]  # (classes,)
    st.plotly_chart(charts.learn_softmax(logits.numpy(), temperature, sm.info.class_names), key="ld_plot")
    p = torch.softmax(logits / temperature, 0)
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum())
    st.markdown(f"True label **{int(sm.data.test.y[idx])}**, teacher predicts **{int(logits.argmax())}**. "
                f"Entropy of the soft targets at T = {temperature:g}: {entropy:.2f} nats "
                f"(uniform over 10 classes: {float(torch.log(torch.tensor(10.0))):.2f}).")
