"""Learn: magnitude pruning, live on a real layer's weights."""

import streamlit as st

import charts
import state

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
    name = st.selectbox("Model", state.DIGITS_MODELS, key="lp_model")
    layers = [r["name"] for r in state.baseline_view(name)["stats"]["layers"] if r["type"] in ("Linear", "Conv2d")]
    layer = st.selectbox("Layer", layers, key="lp_layer")
    amount = st.slider("Sparsity", 0.0, 0.95, 0.5, 0.05, key="lp_amount")
with right:
    w = state.layer_weights(None, name, layer)
    if "prune_unstructured" in state.available_kinds():
        recipe = state.recipe_dict(name, [{"kind": "prune_unstructured", "amount": amount, "targets": [layer],
                                           "include_classifier": True}])
        try:
            res = state.run_recipe(recipe)
            pruned = state.layer_weights(state.recipe_key(recipe), name, layer)
            st.plotly_chart(charts.learn_prune_histogram(w, pruned), key="lp_hist")
            base = state.baseline_view(name)["stats"]
            st.markdown(f"Test accuracy with only **{layer}** pruned to {amount * 100:.0f} %: "
                        f"**{res['stats']['accuracy'] * 100:.2f} %** (baseline {base['accuracy'] * 100:.2f} %). "
                        f"File: {res['stats']['size_bytes'] / 1024:,.1f} KB vs {base['size_bytes'] / 1024:,.1f} KB: "
                        "the zeros are still stored.")
        except Exception as e:
            st.error(state.one_line(e))
    else:
        st.info("The pruning package is not available in this build yet.")
