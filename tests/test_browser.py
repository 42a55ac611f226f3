"""The dashboard in a real browser: Debian's headless chromium driven by Playwright against `streamlit run`.

Every page in the sidebar is opened at a desktop size (1400x900) and a projector size (1280x720) and checked for
what a person would see as broken: an exception box or error line, a chart title (or axis title) cut off at the
chart's edge, two bar labels drawn over each other, a button or label whose text is cut off with an ellipsis.
Screenshots go to $SCREENSHOT_DIR when it is set (the review: /work/notes/shots/).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from browser_helpers import (IDLE_JS, PROBLEMS_JS, browser, needs_chromium, save_screenshot,  # noqa: F401
                             server, shots_dir, wait_idle)

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
SIZES = [(1400, 900), (1280, 720)]
CHARTS = ".js-plotly-plot, [data-testid=stVegaLiteChart]"


def chart_titles(page) -> list[str]:
    return page.locator(".js-plotly-plot .gtitle").all_text_contents()


def scroll_main(page, y: int) -> None:
    page.evaluate("(y) => { const m = document.querySelector('[data-testid=\"stMain\"]') || "
                  "document.scrollingElement; m.scrollTo(0, y); }", y)
    page.wait_for_timeout(250)


def test_load_move_slider_chart_changes_export_recipe(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    t0 = time.perf_counter()
    page.goto(server)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)  # a deadline: the chart must come at all
    first_chart_s = time.perf_counter() - t0  # reported, not asserted (benchmarks.dashboard times the dashboard)
    wait_idle(page)
    assert "Model size (KB)" in chart_titles(page)
    assert not page.locator('[data-testid="stException"]').count()

    page.get_by_text("unstructured (weights)", exact=True).click()
    wait_idle(page)
    slider = page.locator("[data-testid=stSlider] input[type=range], [data-testid=stSlider] [role=slider]").first
    slider.wait_for(state="attached", timeout=60_000)
    nonzero = page.locator('[data-testid="stMetric"]').nth(2)
    before = nonzero.inner_text()
    size_before = page.locator(".js-plotly-plot").nth(0).text_content()
    slider.focus()
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    wait_idle(page)
    page.wait_for_function("([el, t]) => el.innerText !== t", arg=[nonzero.element_handle(), before], timeout=60_000)
    assert nonzero.inner_text() != before  # the non-zero parameter count followed the slider
    assert page.locator(".js-plotly-plot").nth(0).text_content() != size_before  # the size chart changed
    assert not page.locator('[data-testid="stException"]').count()

    page.get_by_role("link", name="Recipe").click()
    page.get_by_text("Download recipe.yaml").wait_for(timeout=60_000)
    wait_idle(page)
    with page.expect_download() as info:
        page.get_by_text("Download recipe.yaml").click()
    text = Path(info.value.path()).read_text()
    assert "kind: prune_unstructured" in text and "model: digits-cnn" in text
    print(f"first chart after {first_chart_s:.1f} s")
    page.close()


def wait_all_idle(pages, settle_ms: int) -> None:
    """``wait_idle`` on each of ``pages`` at once: 300 ms for a run's indicator to show, each page idle, then
    ``settle_ms`` for charts to draw (each page gets every wait ``wait_idle`` gives it; the pages' waits overlap)."""
    pages[0].wait_for_timeout(300)
    for page in pages:
        page.wait_for_function(IDLE_JS, timeout=180_000)
    pages[0].wait_for_timeout(settle_ms)


def test_every_page_is_readable(server, browser, tmp_path):
    """Every sidebar page at each window size (SIZES): no exception or error line, no clipped chart title, no
    overlapping bar labels, no cut-off button or label. The Runtimes lesson is measured (its chart only exists then).
    One page per size, side by side on the server: each step is taken on every page, then they are waited for together
    (the same waits as one page at a time, overlapped)."""
    pages = [browser.new_page(viewport={"width": w, "height": h}) for w, h in SIZES]
    for page in pages:
        page.goto(server)
    for page in pages:
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    wait_all_idle(pages, 400)
    links = [page.locator('[data-testid="stSidebarNavLink"]') for page in pages]
    names = [[ls.nth(i).inner_text().strip().split("\n")[-1].strip() for i in range(ls.count())]  # no icon
             for ls in links]
    for (w, h), shown in zip(SIZES, names):
        assert {"Explore", "Experiments", "Recipe", "Sensitivity", "Advise", "Pruning", "Quantization", "Distillation",
                "Data types", "Runtimes"} <= set(shown), ((w, h), shown)
    assert names[1:] == names[:-1], names  # the same pages at every size
    problems: dict[str, list[str]] = {}
    for i, name in enumerate(names[0]):
        for ls in links:
            ls.nth(i).click()
        wait_all_idle(pages, 800)
        if name == "Explore":  # a compressed model: metrics, four charts and the explanations are on the page
            for page in pages:
                page.get_by_text("structured (neurons / channels / heads)", exact=True).click()
            wait_all_idle(pages, 800)
        if name == "Runtimes":
            measuring = [page for page in pages if page.get_by_text("Measure now", exact=False).count()]
            for page in measuring:
                page.get_by_text("Measure now", exact=False).first.click()
            if measuring:
                wait_all_idle(measuring, 800)
            for page in measuring:
                page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        for page, (w, h) in zip(pages, SIZES):
            title = page.locator("h1").first.inner_text() if page.locator("h1").count() else name
            found = page.evaluate(PROBLEMS_JS)
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            save_screenshot(page, tmp_path, f"{slug}-{w}x{h}")
            if shots_dir():  # the rest of the page, for the review
                for k, y in enumerate((h - 120, 2 * (h - 120), 3 * (h - 120)), 1):
                    scroll_main(page, y)
                    page.screenshot(path=str(shots_dir() / f"{slug}-{w}x{h}-{k}.png"))
                scroll_main(page, 0)
            if found:
                problems[f"{name} ({title[:40]}) at {w}x{h}"] = found
    assert not problems, problems
    for page in pages:
        page.close()
