"""Every page of the dashboard opens through Streamlit's AppTest with no exception and no error box: the fast run's
check that no page is broken (the pages are found on disk, so a new page is covered without editing this file).
Deeper checks of each page live in test_dashboard.py, test_sensitivity_page.py, test_classroom.py and the browser
tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p.name for p in (ROOT / "dashboard" / "pages").glob("*.py"))
LOADS_MINILM = {"learn_transformer.py"}  # the page measures MiniLM live: slow (run by scripts/test.sh)


def test_the_pages_are_found():
    assert {"explore.py", "recipe.py", "classroom.py", "search.py", "advise.py", "experiments.py"} <= set(PAGES)


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if p in LOADS_MINILM else p for p in PAGES])
def test_page_opens_with_no_exception_and_no_error(page):
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    at.switch_page(f"pages/{page}").run()
    assert not at.exception, (page, [e.value for e in at.exception])
    assert not at.error, (page, [e.value for e in at.error])
    assert at.title or at.header or at.markdown, f"{page} rendered nothing"


def test_the_class_server_never_serves_streamlits_automatic_page_list():
    """``dashboard/pages/`` would make Streamlit treat the app as a version-1 multipage app until the first run that
    calls ``st.navigation``: a deep link (``/recipe``) on a fresh server ran that page alone under an automatic page
    list. server.py turns that mode off before any run (the browser check: tests/test_browser_walk.py)."""
    import importlib.util

    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = None  # as at a server's start
    spec = importlib.util.spec_from_file_location("compression_lab_server", ROOT / "dashboard" / "server.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert PagesManager.uses_pages_directory is False
