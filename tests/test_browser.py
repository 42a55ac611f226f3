"""The dashboard in a real browser: Debian's headless chromium driven by Playwright against `streamlit run`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.local_app import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, stop

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is missing (install Debian's chromium: apt-get install chromium)")


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start_app(port)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Screenshot into the test's tmp dir (and into $SCREENSHOT_DIR when set); fail if it is blank."""
    from PIL import Image, ImageStat

    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("SCREENSHOT_DIR"):
        out = Path(os.environ["SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"{name}.png"))
    img = Image.open(path).convert("L")
    assert max(ImageStat.Stat(img).stddev) > 10, f"{path} looks blank"
    assert len(img.getcolors(maxcolors=1_000_000) or []) > 50, f"{path} has almost no distinct colours"
    return path


def wait_idle(page) -> None:
    """Wait until Streamlit finished the current run (the 'running' indicator is gone)."""
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)


def chart_titles(page) -> list[str]:
    return page.locator(".js-plotly-plot .gtitle").all_text_contents()


def test_load_move_slider_chart_changes_export_recipe(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1600, "height": 1100}, accept_downloads=True)
    t0 = time.perf_counter()
    page.goto(server)
    page.locator(".js-plotly-plot").first.wait_for(timeout=90_000)
    first_chart_s = time.perf_counter() - t0
    wait_idle(page)
    assert "Model size (KB)" in chart_titles(page)
    assert not page.locator('[data-testid="stException"]').count()
    save_screenshot(page, tmp_path, "explore_baseline")

    page.get_by_text("unstructured (weights)", exact=True).click()
    wait_idle(page)
    slider = page.locator('[data-testid="stSlider"] input[type="range"]').first
    slider.wait_for(state="attached", timeout=60_000)
    nonzero = page.locator('[data-testid="stMetric"]').nth(2)
    before = nonzero.inner_text()
    acc_before = page.locator(".js-plotly-plot").nth(1).text_content()
    start = slider.input_value()
    slider.focus()
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    assert slider.input_value() != start
    wait_idle(page)
    page.wait_for_function("([el, t]) => el.innerText !== t", arg=[nonzero.element_handle(), before], timeout=30_000)
    assert nonzero.inner_text() != before  # the non-zero parameter count followed the slider
    assert page.locator(".js-plotly-plot").nth(1).text_content() != acc_before  # the accuracy chart changed
    assert not page.locator('[data-testid="stException"]').count()
    shot = save_screenshot(page, tmp_path, "explore_pruned")
    assert shot.stat().st_size > 20_000

    page.get_by_role("link", name="Recipe").click()
    page.get_by_text("Download recipe.yaml").wait_for(timeout=60_000)
    wait_idle(page)
    with page.expect_download() as info:
        page.get_by_text("Download recipe.yaml").click()
    text = Path(info.value.path()).read_text()
    assert "kind: prune_unstructured" in text and "model: digits-cnn" in text
    save_screenshot(page, tmp_path, "recipe")
    assert first_chart_s < 60
    page.close()


def test_learn_and_experiments_pages_render(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(server)
    page.locator(".js-plotly-plot").first.wait_for(timeout=90_000)
    for link, name in (("Data types", "learn_dtypes"), ("Quantization", "learn_quantization"),
                       ("Experiments", "experiments")):
        page.get_by_role("link", name=link).click()
        wait_idle(page)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        assert not page.locator('[data-testid="stException"]').count()
        assert not page.locator('[data-testid="stAlertContentError"]').count()
        save_screenshot(page, tmp_path, name)
    page.close()
