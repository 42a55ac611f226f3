"""Compression Lab dashboard: a thin router; the pages live in dashboard/pages/.

    streamlit run dashboard/server.py                                # the registered workloads (samples, plugins)
    streamlit run dashboard/server.py -- --workload my_model.py:workload --workload pkg.mod:make   # plus your own
    compression-lab dashboard [--port N] [-- --workload REF ...]     # the installed app, from any folder

``server.py`` serves this router through ``st.App`` with the identity cookie (history kept across reloads) and the
teacher link; ``streamlit run dashboard/app.py`` also works, with each session its own, unkept identity (and, until
someone opens ``/``, a page URL opened directly shows Streamlit's automatic list of ``pages/``: server.py turns that
mode off before the first run, this file cannot, as Streamlit runs the page file alone then).

Each ``--workload REF`` (a registered name, ``path/to/file.py:attr`` or ``package.module:attr``) appears in every
page's model list; a reference that cannot be loaded is one error line and the rest of the app still runs.

Adding a page: put ``dashboard/pages/NAME.py`` next to the others. It appears under "More" with a title from its
file name; give it a section, title and icon by adding one line to ``NAV`` below.
"""

import sys
from pathlib import Path

import streamlit as st
import torch

ROOT = Path(__file__).resolve().parent.parent
# the library beside it (a checkout; an installed app imports the installed one), and the dashboard's helpers (charts,
# state, store, jobs, ...) by their plain names
for _p in ([ROOT] if (ROOT / "pyproject.toml").is_file() else []) + [ROOT / "dashboard"]:
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# One intra-op thread: on a shared 2-core machine this makes each rerun's measurements ~10x faster and steadier
# (latency is measured with an explicit thread count anyway).
torch.set_num_threads(1)

import state  # noqa: E402  (after the path set-up above)
import store  # noqa: E402
import trust  # noqa: E402

PAGES = Path(__file__).parent / "pages"
NAV: dict[str, list[tuple[str, str, str]]] = {  # section -> (file in pages/, title, icon); first page is the default
    "Compress": [
        ("explore.py", "Explore", ":material/tune:"),
        ("experiments.py", "Experiments", ":material/scatter_plot:"),
        ("recipe.py", "Recipe", ":material/description:"),
        ("sensitivity.py", "Sensitivity", ":material/grid_on:"),
        ("advise.py", "Advise", ":material/recommend:"),
        ("search.py", "Search", ":material/travel_explore:"),
        ("classroom.py", "Class", ":material/groups:"),
    ],
    "Learn": [
        ("learn_pruning.py", "Pruning", ":material/content_cut:"),
        ("learn_quantization.py", "Quantization", ":material/stairs:"),
        ("learn_distillation.py", "Distillation", ":material/school:"),
        ("learn_dtypes.py", "Data types", ":material/table:"),
        ("learn_runtime.py", "Runtimes", ":material/speed:"),
        ("learn_transformer.py", "Compressing a transformer", ":material/translate:"),
        ("learn_language.py", "Compressing a language model", ":material/chat:"),
    ],
}


def navigation() -> dict[str, list]:
    """``st.navigation``'s sections: the pages listed in NAV that exist, then any other page file under "More"."""
    listed = {name for pages in NAV.values() for name, _, _ in pages}
    sections: dict[str, list] = {}
    first = True
    for section, pages in NAV.items():
        for name, title, icon in pages:
            if (PAGES / name).exists():
                sections.setdefault(section, []).append(st.Page(str(PAGES / name), title=title, icon=icon, default=first))
                first = False
    for path in sorted(PAGES.glob("*.py")):
        if path.name not in listed and not path.name.startswith("_"):
            sections.setdefault("More", []).append(st.Page(str(path), title=path.stem.replace("_", " ").capitalize()))
    return sections


st.set_page_config(page_title="Compression Lab", page_icon=":material/compress:", layout="wide")
# Keep the Explore page's widget values when a student visits another page and comes back.
for _key in [k for k in st.session_state if isinstance(k, str) and k.startswith("x_")]:
    st.session_state[_key] = st.session_state[_key]

page = st.navigation(navigation())
for _line in state.reference_errors():  # a bad --workload is one line on every page; the rest still works
    st.error(_line)
if trust.banner():  # --trust-uploads: stated on every page
    st.warning(trust.banner(), icon=":material/warning:")
store.sync_session()  # this browser's settings back after a reload (first run of a session)
try:
    page.run()
finally:
    store.persist_settings()  # remembered once every widget of the run is known
