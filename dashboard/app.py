"""Compression Lab dashboard: `streamlit run dashboard/app.py`."""

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="Compression Lab", layout="wide")
page = st.navigation([st.Page(str(Path(__file__).parent / "pages" / "explore.py"), title="Explore", default=True)])
page.run()
