"""Explore: pick a model and layers, move the compression controls, watch size, latency and accuracy change."""

import pandas as pd
import streamlit as st

import charts
import explain
import sample_models
import state
from compression_core import resolve_targets
from compression_core.budget import FIT_PRUNE_LEVELS  # the same grid the budget fit picks from


def default(key: str, value) -> str:
    """Give a widget its first value through session state (so values survive page switches without warnings)."""
    st.session_state.setdefault(key, value)
    return key


st.title("Explore: compress a model, watch the numbers")
name = st.selectbox("Model", sample_models.MODEL_NAMES, key=default("x_model", state.DEFAULT_MODEL))
sm = state.baseline(name)
base = state.baseline_view(name)
bstats = base["stats"]
kinds_available = state.available_kinds()

st.caption(f"{sm.info.architecture} - {sm.info.task}. Baseline test accuracy {bstats['accuracy'] * 100:.2f} %, "
           f"{bstats['params']:,} parameters, {bstats['size_bytes'] / 1024:,.1f} KB file.")

with st.expander("Layers of this model", expanded=False):
    st.dataframe(pd.DataFrame([{k: r[k] for k in ("name", "type", "params", "nonzero", "sparsity", "dtype", "bits")}
                               for r in bstats["layers"]]), hide_index=True, width="stretch")

controls, view = st.columns([1, 2], gap="large")

# ------------------------------------------------------------------------------------------ controls
with controls:
    st.subheader("Layers")
    include_cls = st.checkbox(f"Also compress the classifier ({sm.info.classifier})", key=default(f"x_cls_{name}", False))
    st.caption(f"The final classifier `{sm.info.classifier}` is left alone by default: pruning its outputs removes "
               "classes, and it costs the most accuracy per byte saved.")
    all_layers = resolve_targets(sm.model, None, classifier=sm.info.classifier, include_classifier=include_cls)
    chosen = st.multiselect("Layers to compress (Linear / Conv2d)", all_layers, key=default(f"x_layers_{name}", all_layers))
    targets = None if set(chosen) == set(all_layers) else [n for n in all_layers if n in chosen]

    st.subheader("Pruning")
    prune_opts = [k for k, v in state.PRUNE_KINDS.items() if v is None or v in kinds_available]
    if not all_layers:
        st.caption("This model has no Linear/Conv2d layer besides the classifier to prune: tick the box above, or "
                   "try int8 dynamic quantization (it covers LSTM layers).")
        prune_opts = ["none"]
    if "attention heads" in prune_opts and "vit" not in name:
        prune_opts.remove("attention heads")
    if "whole layers / blocks" in prune_opts and "vit" not in name:
        prune_opts.remove("whole layers / blocks")
    if st.session_state.get(f"x_prune_{name}") not in prune_opts:
        st.session_state[f"x_prune_{name}"] = "none"
    prune = st.radio("Pruning kind", prune_opts, key=f"x_prune_{name}")
    ui: dict = {"targets": targets, "include_classifier": include_cls, "prune": None if prune == "none" else prune}
    if prune in ("unstructured (weights)", "structured (neurons / channels)", "attention heads"):
        ui["amount"] = st.slider("Sparsity (fraction removed)", 0.0, 0.95, step=0.05, key=default(f"x_amount_{prune}", 0.5),
                                 help="fraction of weights (unstructured) or of neurons/channels/heads (structured)")
        if prune == "unstructured (weights)":
            ui["scope"] = st.radio("Ranking", ["global", "layer"], horizontal=True, key=default("x_scope", "global"),
                                   help="global: smallest weights of all chosen layers together; layer: each layer alone")
        if prune == "structured (neurons / channels)":
            has_conv = any(r["type"] == "Conv2d" for r in bstats["layers"])
            ui["unit"] = st.radio("Unit", ["channels", "neurons"], horizontal=True,
                                  key=default(f"x_unit_{name}", "channels" if has_conv else "neurons"),
                                  help="channels of Conv2d layers or neurons (output rows) of Linear layers")
        if prune != "attention heads":
            with st.expander("Per-layer overrides"):
                overrides = {}
                for layer in chosen:
                    v = st.select_slider(layer, ["global"] + list(FIT_PRUNE_LEVELS),
                                         key=default(f"x_ovr_{name}_{layer}", "global"))
                    if v != "global":
                        overrides[layer] = float(v)
                ui["overrides"] = overrides
        if prune != "unstructured (weights)":
            ui["shrink"] = st.checkbox("Shrink: physically remove the pruned units", key=default("x_shrink", True),
                                       disabled="shrink" not in kinds_available)
    elif prune == "whole layers / blocks":
        blocks = [f"blocks.{i}" for i in range(len(getattr(sm.model, "blocks", [])))]
        ui["blocks"] = st.multiselect("Blocks to remove", blocks, key=default(f"x_blocks_{name}", blocks[-1:]))
    elif prune == "threshold (|w| below a value)":
        ui["threshold"] = st.slider("Threshold |w|", 0.0, 0.3, step=0.005, key=default("x_threshold", 0.05),
                                    format="%.3f")

    st.subheader("Quantization")
    quant_opts = [k for k, v in state.QUANT_KINDS.items() if v is None or v in kinds_available]
    if st.session_state.get("x_quant") not in quant_opts:
        st.session_state["x_quant"] = "none"
    quant = st.selectbox("Quantization kind", quant_opts, key="x_quant")
    ui["quant"] = None if quant == "none" else quant
    if quant == "simulated n-bit (fake quant)":
        ui["bits"] = st.slider("Bits per weight (simulated)", 2, 16, key=default("x_bits", 8))
        with st.expander("Per-layer bits (mixed precision)"):
            bits_over = {}
            for layer in chosen:
                v = st.select_slider(f"{layer} bits", ["global"] + list(range(2, 17)),
                                     key=default(f"x_bits_{name}_{layer}", "global"))
                if v != "global":
                    bits_over[layer] = int(v)
            ui["bit_overrides"] = bits_over
    missing = [k for k, v in {**state.PRUNE_KINDS, **state.QUANT_KINDS}.items() if v and v not in kinds_available]
    if missing:
        st.caption("Not available in this build of the library yet: " + ", ".join(missing))

    st.subheader("Training (runs on a button)")
    t1, t2 = st.columns(2)
    ui["finetune_epochs"] = t1.number_input("Fine-tune epochs", 0, 20, key=default("x_ft", 0),
                                            help="after pruning; keeps pruned weights at zero")
    teachers = [n for n in sample_models.MODEL_NAMES if sample_models.info(n).dataset == sm.info.dataset]
    ui["distill_epochs"] = t2.number_input("Distillation epochs", 0, 20, key=default("x_kd", 0),
                                           disabled="distill" not in kinds_available)
    if ui["distill_epochs"]:
        ui["teacher"] = st.selectbox("Teacher", teachers, key=default(f"x_teacher_{name}", name))
    if quant == "int8 static (real, calibrated)" and "quantize_qat" in kinds_available:
        ui["qat_epochs"] = st.number_input("QAT epochs (instead of calibration only)", 0, 20, key=default("x_qat", 0))

preview_steps = state.build_steps(ui, training=False)
full_steps = state.build_steps(ui, training=True)
preview = state.recipe_dict(name, preview_steps)
full = state.recipe_dict(name, full_steps)
trained = st.session_state.setdefault("trained_keys", set())
needs_training = full_steps != preview_steps
with controls:
    if needs_training:
        done = state.recipe_key(full) in trained
        if st.button("Run training steps", type="primary", disabled=done, key="b_run"):
            bar = st.progress(0.0, text="starting")
            try:
                state.run_recipe(full, progress=lambda f, msg: bar.progress(f, text=msg))
                trained.add(state.recipe_key(full))
                bar.progress(1.0, text="done")
            except Exception as e:  # one line, never a traceback
                st.error(state.one_line(e))
        if state.recipe_key(full) not in trained:
            st.caption("Showing the preview without training; press the button to run the training steps.")
current = full if state.recipe_key(full) in trained else preview
st.session_state["current_recipe"] = current

# ------------------------------------------------------------------------------------------ results
with view:
    after = None
    result = None
    if current["steps"]:
        try:
            result = state.run_recipe(current)
            after = result["stats"]
        except Exception as e:  # CompressionError, pydantic errors, anything unexpected: one line
            st.error(state.one_line(e))
    st.session_state["current_stats"] = after
    state.record(name, "baseline", None, bstats)
    if after is not None:
        state.record(name, state.describe(current["steps"]), current, after)

    if after is not None:
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Accuracy" + (" (simulated)" if after["simulated"] else ""), f"{after['accuracy'] * 100:.2f} %",
                  f"{(after['accuracy'] - bstats['accuracy']) * 100:+.2f} points")
        m2.metric("File size (dense)", f"{after['size_bytes'] / 1024:,.1f} KB",
                  f"{after['size_bytes'] / bstats['size_bytes']:.2f}x of before", delta_color="off", delta_arrow="off")
        m3.metric("Non-zero parameters", f"{after['nonzero_params']:,}",
                  f"{after['nonzero_params'] / bstats['nonzero_params']:.2f}x of before", delta_color="off", delta_arrow="off")
        m4.metric("FLOPs if zeros skipped", f"{after['nonzero_flops']:,}",
                  f"{after['nonzero_flops'] / max(bstats['nonzero_flops'], 1):.2f}x of before", delta_color="off",
                  delta_arrow="off")
    else:
        st.info("Move a control on the left: the charts compare the compressed model with the baseline.")

    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.size_chart(bstats, after), key="size_chart")
    c2.plotly_chart(charts.accuracy_chart(bstats, after), key="acc_chart")

    @st.fragment
    def latency_panel():
        """Latency is timed on request (many repeated runs) and cached per configuration and runtime."""
        l1, l2, l3, l4 = st.columns([1, 1, 1.4, 1.6])
        batch = l1.selectbox("Batch", [1, 32], key=default("x_batch", 1))
        threads = l2.selectbox("Threads", [1, 2], key=default("x_threads", 1))
        runtimes = ["torch"] + (["torch + ONNX Runtime"] if state.ort_module() is not None else [])
        runtime = l3.selectbox("Runtime", runtimes, key=default("x_runtime", "torch"),
                               help="ONNX Runtime: the model exported to ONNX and run the way it is often deployed")
        key = state.recipe_key(current) if after is not None else None
        asked = st.session_state.setdefault("latency_asked", set())
        if l4.button("Measure latency (before and after)", key="b_latency"):
            asked.add((key, name, batch, threads, runtime))
        if (key, name, batch, threads, runtime) not in asked:
            st.caption(f"Latency (ms) at batch {batch}, {threads} thread(s): press the button. Timing needs many "
                       "repeated runs, so it is measured on request and then cached for this configuration.")
            return
        with st.spinner("timing..."):
            lat_b = state.latency_view(None, name, batch, threads)
            lat_a = state.latency_view(key, name, batch, threads) if key else None
        state.record(name, "baseline", None, bstats, lat_b)
        if lat_a:
            state.record(name, state.describe(current["steps"]), current, after, lat_a)
        series = {"torch": ({**bstats, **lat_b}, {**after, **lat_a} if lat_a else None)}
        if runtime != "torch":
            try:
                with st.spinner("exporting to ONNX and timing in ONNX Runtime..."):
                    ort_b = state.ort_view(None, name, batch, threads)
                    ort_a = state.ort_view(key, name, batch, threads) if key else None
                series["ONNX Runtime"] = (ort_b, ort_a)
            except Exception as e:  # a model ONNX cannot export (e.g. torch int8 modules): one line
                st.error(state.one_line(e))
        st.plotly_chart(charts.latency_chart(series, batch, threads), key="lat_chart")
        if len(series) > 1:
            rows = [{"runtime": rt, "model": lbl, "file (KB)": round(s["size_bytes"] / 1024, 1),
                     "accuracy (%)": round(s["accuracy"] * 100, 2), "latency (ms)": round(s["latency_ms"], 4)}
                    for rt, pair in series.items() for lbl, s in zip(("before", "after"), pair) if s]
            st.dataframe(pd.DataFrame(rows), hide_index=True)
        if after is not None:
            st.markdown("\n\n".join(explain.why_speed(lat_b, lat_a, [s["kind"] for s in current["steps"]], batch)))

    latency_panel()
    if after is not None:
        notes = explain.why_size(bstats, after, [s["kind"] for s in current["steps"]])
        if notes:
            st.info("\n\n".join(notes))

    st.plotly_chart(charts.layer_chart(bstats["layers"], after["layers"] if after else None), key="layer_chart")
    weighted = [r["name"] for r in (after or bstats)["layers"] if r["type"] not in ("BatchNorm2d", "LayerNorm")]
    if weighted:
        sizes = {r["name"]: r["params"] for r in bstats["layers"]}
        biggest = max(weighted, key=lambda n: sizes.get(n, 0))
        if st.session_state.get(f"x_hist_{name}") not in weighted:
            st.session_state[f"x_hist_{name}"] = biggest
        layer = st.selectbox("Layer for the weight histogram", weighted, key=f"x_hist_{name}")
        w_before = state.layer_weights(None, name, layer)
        w_after = state.layer_weights(state.recipe_key(current), name, layer) if after is not None else None
        if w_before is not None:
            st.plotly_chart(charts.weight_histogram(w_before, w_after, layer), key="hist_chart")
        else:
            st.caption(f"{layer} has no weight matrix of its own to plot.")

    tab1, tab2 = st.tabs(["Per-class accuracy", "Confusion matrix"])
    classes = sm.info.class_names
    tab1.plotly_chart(charts.per_class_chart(base["confusion"], result["confusion"] if result else None, classes),
                      key="class_chart")
    tab2.plotly_chart(charts.confusion_chart((result or base)["confusion"], classes,
                                             "Confusion matrix, " + ("after" if result else "baseline") + " (counts)"),
                      key="cm_chart")
    if result and result.get("steps"):
        with st.expander("What each step did"):
            st.dataframe(pd.DataFrame(result["steps"]), hide_index=True, width="stretch")
