"""Learn: compressing a language model (a small GPT-2 decoder): fp32 against int8 dynamic, int4 round-to-nearest,
int4 GPTQ and int4 AWQ, each with its perplexity (lower is better), next-token accuracy, file size and the text it
generates from the same prompt (greedy decoding: deterministic), the uncompressed model's text beside it.

Every number is measured here through the library (``apply_recipe``, cached per process, the same path the CLI
takes); text comes from ``compression_core.extra_metrics.generate_text`` (the workload's own generator). The
compressions run on one button with a progress bar; a second visit reads them from the cache.
"""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import state
from compression_core.extra_metrics import generate_text, text_generator
from compression_core.workload import registered_workloads

PREFERRED = "tiny-lm"
NEW_TOKENS = 32  # tokens generated per prompt: a sentence or two
# each sent as one dialog line (a newline after it), so the model writes the reply line(s)
PROMPTS = ("Tell me a joke.", "How do I install Python?", "Do you like music?", "My computer is slow.", "Hello")
# (label, recipe steps): the methods people compare on language models, weight-only 4 bits in groups of 64
METHODS = (
    ("fp32 (uncompressed)", []),
    ("int8 dynamic", [{"kind": "quantize_dynamic"}]),
    ("int4 RTN (round to nearest)", [{"kind": "quantize_weight_only", "bits": 4, "method": "rtn", "group_size": 64}]),
    ("int4 GPTQ", [{"kind": "quantize_weight_only", "bits": 4, "method": "gptq", "group_size": 64}]),
    ("int4 AWQ", [{"kind": "quantize_weight_only", "bits": 4, "method": "awq", "group_size": 64}]),
)


def language_models() -> list[str]:
    """The offered models whose registered listing says their metric is lower-is-better (perplexity): read from
    the listing, no model loaded."""
    reg = registered_workloads()
    out = []
    for r in state.models():
        info = reg[r].info if r in reg else {}
        if info.get("higher_is_better") is False or info.get("metric") == "perplexity":
            out.append(r)
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def continuation(ref: str, key: str | None, prompt: str) -> str:
    """The model's (the baseline's for key None, else the recipe's result's) greedy reply to ``prompt`` (sent as
    one dialog line)."""
    return generate_text(state.model_of(key, ref), state.baseline(ref), prompt + "\n", max_new_tokens=NEW_TOKENS)


def measure(ref: str, f: dict, bstats: dict, label: str, steps: list[dict], prompt: str) -> dict:
    """One method's row: applied and measured (cached per process), its next-token accuracy and its text."""
    if steps:
        recipe = state.recipe_dict(f["reference"], steps)
        key = state.recipe_key(recipe)
        view = state.run_recipe(recipe)
        s, seconds = view["stats"], view.get("seconds", 0.0)
    else:
        key, s, seconds = None, bstats, 0.0
    extra = state.extra_view(key, ref)
    return {"method": label, "perplexity": s["accuracy"], "change": s["accuracy"] / bstats["accuracy"] - 1,
            "next-token accuracy": next(iter(extra.values()), None), "KB": s["size_bytes"] / 1024,
            "size x": s["size_bytes"] / bstats["size_bytes"], "seconds": seconds,
            "text": continuation(ref, key, prompt)}


st.title("Learn: compressing a language model")
refs = language_models()
if not refs:
    st.info("No language model (a workload whose metric is perplexity) is offered here: this lesson needs one, "
            "e.g. the tiny-lm sample.")
    st.stop()
ref = st.selectbox("Model", refs, key="ll_model", index=state.default_index(refs, PREFERRED), format_func=state.label)
try:
    wl = state.baseline(ref)
    f = state.facts(ref)
    bstats = state.baseline_view(ref)["stats"]
    if text_generator(wl) is None:
        raise ValueError(f"{ref} gives no text generator (info['generate']), so no text can be shown")
except Exception as e:
    st.error(state.one_line(e))
    st.stop()

st.markdown(
    f"**{f['architecture']}**: {bstats['params']:,} parameters, a {bstats['size_bytes'] / 1024:,.0f} KB file. A "
    "language model predicts the next token (a word piece) from the ones before it. **Perplexity** is how unsure it "
    "is on text it has not seen: exp of the average loss per token, *lower is better* (1 would be certain and right; "
    f"{f['vocab_size']:,} would be guessing among the whole vocabulary). Next-token accuracy is how often its first "
    "guess is the right token. Below, the same model is stored four ways and each version continues the same prompt.")
st.markdown(
    "- **int8 dynamic**: every weight matrix in 8 bits, activations quantized on the fly.\n"
    "- **int4 RTN**: 4-bit weights in groups of 64 inputs, each rounded to the nearest level: no data needed.\n"
    "- **int4 GPTQ** (Frantar et al. 2022): the same format, but each column's rounding error is corrected on the "
    "columns not yet rounded, using the calibration text's activations.\n"
    "- **int4 AWQ** (Lin et al. 2023): the same format, after scaling up the input channels that carry large "
    "activations so their weights round with less error.")

prompt = st.selectbox("Prompt", PROMPTS, key="ll_prompt")
if "ll_rows" not in st.session_state:
    st.session_state["ll_rows"] = {}
rows: dict = st.session_state["ll_rows"]
slot = (ref, prompt)
if st.button("Compress four ways and compare", type="primary", key="ll_run") or slot in rows:
    if slot not in rows:
        bar = st.progress(0.0, text="applying")
        try:
            out = []
            for i, (label, steps) in enumerate(METHODS):
                bar.progress(i / len(METHODS), text=f"{label}: applying, measuring, generating")
                out.append(measure(ref, f, bstats, label, steps, prompt))
            rows[slot] = out
        except Exception as e:  # one line, never a traceback
            st.error(state.one_line(e))
        finally:
            bar.empty()
    done = rows.get(slot)
    if done:
        base = done[0]
        cols = st.columns(len(done))
        for col, r in zip(cols, done):
            col.metric(r["method"], f"{r['perplexity']:.2f}",
                       None if r is base else f"{r['change'] * 100:+.1f} % perplexity",
                       delta_color="inverse", help="perplexity on the test split: lower is better")
            col.caption(f"{r['KB']:,.0f} KB ({r['size x']:.2f}x)"
                        + (f"; next-token accuracy {r['next-token accuracy'] * 100:.1f} %"
                           if r["next-token accuracy"] is not None else ""))
        st.subheader("The same prompt, continued by each version (greedy: the most likely token each time)")
        st.markdown(f"**Prompt:** {prompt}")
        for r in done:
            with st.container(border=True):
                st.markdown(f"**{r['method']}** (perplexity {r['perplexity']:.2f})")
                st.text(r["text"] or "(nothing: the model ended the dialog at once)")
        st.caption("Identical text means the compressed model still picks the same most likely token at every step; "
                   "text that drifts shows where rounding changed a choice. The model is small and trained on a "
                   "small corpus, so even the uncompressed text is chat-like rather than sensible.")
        df = pd.DataFrame([{"method": r["method"], "perplexity": round(r["perplexity"], 3),
                            "change (%)": round(r["change"] * 100, 2),
                            "next-token accuracy (%)": None if r["next-token accuracy"] is None
                            else round(r["next-token accuracy"] * 100, 2),
                            "file KB": round(r["KB"], 1), "size x": round(r["size x"], 3),
                            "seconds to apply": round(r["seconds"], 1)} for r in done])
        st.dataframe(df, hide_index=True, width="stretch")
        fig = go.Figure(go.Bar(x=[r["method"] for r in done], y=[r["perplexity"] for r in done],
                               text=[f"{r['perplexity']:.2f}" for r in done], textposition="outside",
                               cliponaxis=False, marker_color=["#1f77b4"] + ["#ff7f0e"] * (len(done) - 1)))
        fig.update_layout(title=dict(text="Test perplexity of each version (lower is better)", x=0.0),
                          yaxis_title="perplexity, lower is better", height=360, margin=dict(t=50, b=40))
        fig.update_yaxes(range=[0, max(r["perplexity"] for r in done) * 1.2])
        st.plotly_chart(fig, key="ll_chart")
else:
    st.info("Press the button: the four compressed versions are applied and measured here (GPTQ and AWQ calibrate "
            "on the calibration split: a few seconds each), then each continues the prompt.")
