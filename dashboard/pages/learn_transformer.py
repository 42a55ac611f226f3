"""Learn: compressing a transformer (a pretrained BERT-style encoder): attention heads, FFN neurons, whole layers,
int8 (dynamic + int8 embeddings) and distillation, each with its live numbers from ``apply_recipe``.

Every number is measured here through the library (small recipes, cached per process); size is the whole model's
file, the metric and the workload's extra metrics (e.g. embedding fidelity) on the workload's preview subset (its
first test items, stated on the page) so each measurement takes seconds. Training (distillation) runs on a button.
"""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import state

PREFERRED = "minilm-topics"  # the default choice only: any model with token inputs can be picked

st.title("Learn: compressing a transformer")
refs = [r for r in state.models() if not state.tensor_input(r)]  # token-id inputs: text transformers
if not refs:
    st.info("No model with token inputs is registered: this lesson needs a transformer workload.")
    st.stop()
ref = st.selectbox("Model", refs, key="lt_model", index=state.default_index(refs, PREFERRED), format_func=state.label)
try:
    wl = state.baseline(ref)
    f = state.facts(ref)
    bstats = state.baseline_view(ref)["stats"]
except Exception as e:
    st.error(state.one_line(e))
    st.stop()
pv = state.preview_size(ref)
n_items, n_all = pv if pv else (f["test_items"], f["test_items"])
st.markdown(
    f"**{f['architecture']}**: {bstats['params']:,} parameters, a {bstats['size_bytes'] / 2**20:,.1f} MB file, "
    f"test {f['metric']} {state.metric_text(bstats['accuracy'], f)}. A transformer layer is an *attention* block "
    "(heads that each look at the sentence in their own way) and a *feed-forward* block (FFN: two Linear layers "
    "with a wide hidden layer); the token-embedding table holds a large share of the weights. Each section below "
    "removes or shrinks one of these parts and measures what it costs."
)
st.caption(f"Numbers: file size of the whole model; {f['metric']} and extra metrics on a preview of {n_items} of "
           f"{n_all} test {state.item_name(ref)} (fixed, the first ones), so each measurement takes seconds.")

if "lt_rows" not in st.session_state:
    st.session_state["lt_rows"] = {}
rows: dict = st.session_state["lt_rows"]


def measure(title: str, steps: list[dict], progress=None) -> dict:
    """Apply the recipe (cached per process) and measure it on the preview subset; keep a row for the table."""
    recipe = state.recipe_dict(f["reference"], steps)
    key = state.recipe_key(recipe)
    if pv:
        state.applied(key, progress)
        view = state.preview_view(key)
    else:
        view = dict(state.run_recipe(recipe, progress))
        view["extra"] = state.extra_view(key, ref)
    s = view["stats"]
    base_metric = view.get("baseline_accuracy", bstats["accuracy"])
    row = {"configuration": title, "size (x of before)": round(s["size_bytes"] / bstats["size_bytes"], 3),
           "parameters": s["params"], f"{f['metric']}": state.metric_text(s["accuracy"], f),
           "change": state.metric_delta(s["accuracy"], base_metric, f),
           **{k: round(v, 4) for k, v in view.get("extra", {}).items()},
           "seconds to apply": round(view.get("seconds", 0.0), 1)}
    rows[title] = row
    return row


def show(row: dict | None) -> None:
    if row is None:
        return
    cols = st.columns(3 + len([k for k in row if k not in ("configuration", "size (x of before)", "parameters",
                                                          f["metric"], "change", "seconds to apply")]))
    cols[0].metric("File size", f"{row['size (x of before)']:.2f}x of before")
    cols[1].metric(state.metric_title(f) + " (preview)" if pv else state.metric_title(f), row[f["metric"]],
                   row["change"], delta_color=state.delta_color(f))
    cols[2].metric("Parameters", f"{row['parameters']:,}")
    extra = [k for k in row if k not in ("configuration", "size (x of before)", "parameters", f["metric"], "change",
                                         "seconds to apply")]
    for col, k in zip(cols[3:], extra):
        col.metric(k.capitalize(), f"{row[k]:.4f}")


def section(title: str, text: str, steps: list[dict], button: str, slot: str) -> None:
    st.markdown(text)
    name = f"{title}"
    if st.button(button, key=f"lt_b_{slot}"):
        try:
            with st.spinner("applying and measuring..."):
                measure(name, steps)
        except Exception as e:
            st.error(state.one_line(e))
    show(rows.get(name))


st.header("1. Attention heads")
heads = st.select_slider("Share of heads removed in every layer", [0.25, 0.5, 0.75], 0.5, key="lt_heads")
section(f"heads -{heads:.0%}",
        "Each attention layer has several heads; many are redundant (Michel et al. 2019, *Are Sixteen Heads Really "
        "Better than One?*). Removing a head takes its query/key/value rows and its share of the output projection "
        "with it (`prune_structured unit=heads` + `shrink`): the matrices really get smaller.",
        [{"kind": "prune_structured", "unit": "heads", "amount": heads}, {"kind": "shrink"}],
        "Measure head pruning", "heads")

st.header("2. FFN neurons")
ffn = st.select_slider("Share of FFN neurons removed", [0.25, 0.5, 0.75], 0.5, key="lt_ffn")
section(f"FFN neurons -{ffn:.0%}",
        "The feed-forward block holds about two thirds of each layer's weights. Its hidden neurons with the smallest "
        "weights are removed with both Linear layers around them (`prune_structured unit=neurons` + `shrink`).",
        [{"kind": "prune_structured", "unit": "neurons", "amount": ffn}, {"kind": "shrink"}],
        "Measure FFN pruning", "ffn")

st.header("3. Whole layers")
depth = st.select_slider("Layers removed (those whose removal costs the least)", [1, 2, 3], 2, key="lt_layers")
section(f"layers -{depth}",
        "Residual connections let a transformer skip a whole layer; the library tries each one on the calibration "
        "split and removes those that cost the least (`prune_layers count=N`). Depth is what makes latency drop "
        "in proportion.",
        [{"kind": "prune_layers", "count": depth}], "Measure layer removal", "layers")

st.header("4. int8: dynamic quantization and int8 embeddings")
emb = st.toggle("Also store the embedding table in int8", True, key="lt_emb")
section("int8 dynamic" + (" + int8 embeddings" if emb else ""),
        "Dynamic int8 stores every Linear weight in 8 bits and quantizes activations on the fly. The embedding "
        "table is not a Linear layer: left in float it caps the file at about 0.6x; int8 embeddings (row-wise "
        "scales) take it to about a quarter.",
        [{"kind": "quantize_dynamic"}] + ([{"kind": "quantize_embedding"}] if emb else []),
        "Measure int8", "int8")

st.header("5. Distillation: recover what pruning cost")
st.markdown(
    "After half the heads are removed, the smaller model is trained to match the original's softened outputs "
    "(the *teacher*: the model before compression) for one epoch: distillation (Hinton et al. 2015; DistilBERT, "
    "Sanh et al. 2019). This trains, so it runs on a button (a minute or more on a shared CPU).")
distill_steps = [{"kind": "prune_structured", "unit": "heads", "amount": 0.5}, {"kind": "shrink"},
                 {"kind": "distill", "temperature": 2.0, "alpha": 0.9, "epochs": 1, "lr": 1e-4, "batch_size": 32}]
if st.button("Train the pruned model by distillation", key="lt_b_distill"):
    bar = st.progress(0.0, text="distilling...")
    try:
        measure("heads -50%", distill_steps[:2])
        measure("heads -50% + distilled", distill_steps,
                progress=lambda p, msg: bar.progress(min(max(float(p), 0.0), 1.0), text=str(msg)[:80]))
        bar.progress(1.0, text="done")
    except Exception as e:
        st.error(state.one_line(e))
show(rows.get("heads -50% + distilled"))

if rows:
    st.header("Everything measured so far")
    df = pd.DataFrame(list(rows.values()))
    st.dataframe(df, hide_index=True, width="stretch")
    fig = go.Figure(go.Bar(x=df["configuration"], y=df["size (x of before)"], name="size (x of before)"))
    fig.update_layout(title="File size after each technique (x of before)", height=320, margin=dict(t=40, b=40))
    st.plotly_chart(fig, key="lt_sizes")
