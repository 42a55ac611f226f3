"""Compression Lab dashboard: `streamlit run dashboard/app.py` (a thin router; the pages live in dashboard/pages/)."""

import sys
from pathlib import Path

import streamlit as st
import torch

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "dashboard"):  # the library, and the dashboard's helpers (charts, state, explain)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# One intra-op thread: on a shared 2-core machine this makes each rerun's measurements ~10x faster and steadier
# (latency is measured with an explicit thread count anyway).
torch.set_num_threads(1)

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="Compression Lab", page_icon=":material/compress:", layout="wide")
# Keep the Explore page's widget values when a student visits another page and comes back.
for _key in [k for k in st.session_state if isinstance(k, str) and k.startswith("x_")]:
    st.session_state[_key] = st.session_state[_key]

page = st.navigation({
    "Compress": [
        st.Page(str(PAGES / "explore.py"), title="Explore", icon=":material/tune:", default=True),
        st.Page(str(PAGES / "experiments.py"), title="Experiments", icon=":material/scatter_plot:"),
        st.Page(str(PAGES / "recipe.py"), title="Recipe", icon=":material/description:"),
        st.Page(str(PAGES / "sensitivity.py"), title="Sensitivity", icon=":material/grid_on:"),
        st.Page(str(PAGES / "advise.py"), title="Advise", icon=":material/recommend:"),
    ],
    "Learn": [
        st.Page(str(PAGES / "learn_pruning.py"), title="Pruning", icon=":material/content_cut:"),
        st.Page(str(PAGES / "learn_quantization.py"), title="Quantization", icon=":material/stairs:"),
        st.Page(str(PAGES / "learn_distillation.py"), title="Distillation", icon=":material/school:"),
        st.Page(str(PAGES / "learn_dtypes.py"), title="Data types", icon=":material/table:"),
        st.Page(str(PAGES / "learn_runtime.py"), title="Runtimes", icon=":material/speed:"),
    ],
})
page.run()
