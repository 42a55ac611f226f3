"""Recipe: export the current configuration as YAML (and the CLI command), or import a recipe and reproduce it."""

import pandas as pd
import streamlit as st

import charts
import state
import take_home
import techniques as T
from compression_core import CompressionError

RECIPE_KB = state.MAX_RECIPE_UPLOAD_BYTES // 1024  # the library's limit on a recipe (256 KB)

st.title("Recipe")
st.markdown("A recipe is the whole configuration as a small YAML file: the model, a seed and the ordered steps. "
            "The command line applies it with the very same library code, so it reproduces these numbers.")

refs = state.models()
current = st.session_state.get("current_recipe") or state.recipe_dict(refs[state.default_index(refs)], [])
st.subheader("Export the current configuration")
try:
    text = state.to_yaml(current)
except Exception as e:
    st.error(state.one_line(e))
    text = None
if text is not None:
    st.code(text, language="yaml")
    st.download_button("Download recipe.yaml", text, file_name="recipe.yaml", mime="application/x-yaml",
                       key="r_download")
    st.markdown("Reproduce it on the command line:")
    st.code("python -m compression_core apply recipe.yaml", language="bash")
    if current["steps"]:
        try:
            shown = state.run_recipe(current)["stats"]
            f = state.facts(current["model"])
            st.markdown(f"The dashboard measured this recipe at **{f['metric']} {state.metric_text(shown['accuracy'], f)}**"
                        f" and **size_bytes {shown['size_bytes']:,}**; the command prints the same `after` numbers.")
        except Exception as e:
            st.error(state.one_line(e))
            shown = None
        take_home.offer(current, "take_r", shown, title="Take the compressed model home")

st.subheader("Import a recipe and reproduce it")
# No type filter: the uploader's own refusal of a file type shows only in a tooltip; the library reads the text and
# any problem is one st.error line below. The real limit is the library's (256 KB): the label says so and the page
# refuses a bigger file in one line, replaced by the next file's outcome. The widget's own check (whole MB only) is left
# at the server's cap: a file it refused would stay listed with its error beside the next file chosen (a stale error),
# and its "NMB per file" line is replaced by the real limit, so the page states one limit.
_DROP = ".st-key-r_upload [data-testid='stFileUploaderDropzoneInstructions']"
st.html(f"<style>{_DROP} span {{display: none;}} {_DROP} > div::after {{content: '{RECIPE_KB} KB per file'; "
        "font-size: 14px; line-height: 22.4px; color: rgba(47, 45, 43, 0.7);}</style>")
up = st.file_uploader(f"Recipe file (.yaml, .yml, .json or .md with YAML front matter; at most {RECIPE_KB} KB)",
                      key="r_upload")
if up is not None:
    try:
        raw = up.getvalue()
        if len(raw) > state.MAX_RECIPE_UPLOAD_BYTES:
            raise CompressionError(f"recipe: the file is {len(raw):,} bytes; a recipe may be at most {RECIPE_KB} KB "
                                   f"({state.MAX_RECIPE_UPLOAD_BYTES:,} bytes)")
        recipe = state.parse_recipe_text(raw.decode("utf-8"))
        needs_training = any((t := T.by_kind(s["kind"])) is not None and t.ui.trains for s in recipe["steps"])
        go = True
        if needs_training:
            go = st.button("Run this recipe (it trains)", type="primary", key="r_run")
        if go:
            bar = st.progress(0.0, text="applying") if needs_training else None
            try:
                res = state.run_recipe(recipe, progress=(lambda f, m: bar.progress(f, text=m)) if bar else None)
            finally:
                if bar is not None:
                    bar.empty()  # no bar left at "applying 0%" above the result
            base = state.baseline_view(recipe["model"])["stats"]
            f = state.facts(recipe["model"])
            after = res["stats"]
            state.record(recipe["model"], state.describe(recipe["steps"]), recipe, after)
            st.success(f"Reproduced {state.label(recipe['model'])}: {f['metric']} "
                       f"{state.metric_text(after['accuracy'], f)}, size {after['size_bytes']:,} bytes.")
            c1, c2 = st.columns(2)
            c1.plotly_chart(charts.size_chart(base, after), key="r_size")
            c2.plotly_chart(charts.accuracy_chart(base, after, f["metric"], f["percent"], f["higher_is_better"]),
                            key="r_acc")
            st.dataframe(pd.DataFrame(res["steps"]), hide_index=True, width="stretch")
    except UnicodeDecodeError:
        st.error("recipe: the file is not UTF-8 text")
    except Exception as e:  # CompressionError, pydantic, anything unexpected: one line, never a traceback
        st.error(state.one_line(e))

take_home.open_bundle()
