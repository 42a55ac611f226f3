"""Learn: magnitude pruning, live on a real layer's weights."""

import streamlit as st

import charts
import state
import techniques as T

st.title("Learn: pruning")
left, right = st.columns([1, 2], gap="large")
with left:
    st.markdown(
        "**Magnitude pruning** sets the weights with the smallest absolute value to zero: they contribute least to "
        "each output (Han et al. 2015, *Learning both Weights and Connections*).\n\n"
        "- *Unstructured*: any single weight may go. High sparsity, little accuracy lost, but the matrix keeps its "
        "shape: the file and the dense matrix multiply stay the same size unless stored sparse.\n"
        "- *Structured*: whole neurons, channels or attention heads go. Less sparsity for the same accuracy, but the "
        "layer can be **shrunk**: smaller file, fewer FLOPs, really faster.\n"
        "- *Fine-tuning* afterwards recovers most of the accuracy lost.\n\n"
        "Move the slider: the red bars are weights set to zero (all near 0, the middle of the bell)."
    )
    refs = state.models()
    name = st.selectbox("Model", refs, key="lp_model", index=state.default_index(refs), format_func=state.label)
    lesson = T.by_kind("prune_unstructured")  # the lesson's technique; its own layer types
    layers = T.layers_of(state.baseline(name).model, lesson.ui.layer_types, None, True)
    layer = st.selectbox("Layer", layers, key="lp_layer")
    amount = st.slider("Sparsity", 0.0, 0.95, 0.5, 0.05, key="lp_amount")
with right:
    w = state.layer_weights(None, name, layer)
    # the lesson's technique: magnitude pruning of single weights, in this one layer
    recipe = state.recipe_dict(name, [{"kind": "prune_unstructured", "amount": amount, "targets": [layer],
                                       "include_classifier": True}])
    try:
        res = state.run_recipe(recipe)
        pruned = state.layer_weights(state.recipe_key(recipe), name, layer)
        st.plotly_chart(charts.learn_prune_histogram(w, pruned), key="lp_hist")
        base = state.baseline_view(name)["stats"]
        f = state.facts(name)
        st.markdown(f"Test {f['metric']} with only **{layer}** pruned to {amount * 100:.0f} %: "
                    f"**{state.metric_text(res['stats']['accuracy'], f)}** (baseline "
                    f"{state.metric_text(base['accuracy'], f)}). "
                    f"File: {res['stats']['size_bytes'] / 1024:,.1f} KB vs {base['size_bytes'] / 1024:,.1f} KB: "
                    "the zeros are still stored.")
    except Exception as e:
        st.error(state.one_line(e))
