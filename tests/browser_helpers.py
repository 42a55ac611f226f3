"""What the browser tests share: Debian's chromium driven by Playwright against ``dashboard/server.py`` served by
``streamlit run`` (benchmarks/local_app.py).

- ``needs_chromium``: a mark that skips a test when ``/usr/bin/chromium`` is missing.
- ``served(app_args)``: the app on a free port for a ``with`` block (its URL); ``launch(p)``: chromium with the
  project's flags from a ``sync_playwright()`` handle; ``chromium()``: both in one ``with`` block.
- ``server`` and ``browser``: the same as module-scoped fixtures (one server and one chromium per test module), used by
  ``from browser_helpers import browser, server  # noqa: F401`` in a test module.
- ``wait_idle(page)``: Streamlit finished its run (no running indicator, no spinner), then a moment for charts.
- ``open_page(browser, url)``: a new page on the app once its first chart is drawn and Streamlit is idle;
  ``pick_model(page, name)``: the page's first selectbox (the model) set to ``name``.
- ``choose(page, label, text)``: a selectbox picked by typing, as a person with a keyboard does.
- ``PROBLEMS_JS``, ``save_screenshot``: what a person would see as broken on a page; a screenshot that must not be
  blank (also into $SCREENSHOT_DIR when it is set).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.local_app import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, stop

MISSING = f"{CHROMIUM} is missing (install Debian's chromium: apt-get install chromium)"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=MISSING)


def skip_without_chromium() -> None:
    """Skip the calling test when chromium is missing (for tests that cannot carry ``needs_chromium``)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(MISSING)


@contextmanager
def served(app_args: list[str] | None = None, timeout: float = 120):
    """``dashboard/server.py`` on a free port (``app_args`` after ``--``), stopped when the block ends: its URL."""
    port = free_port()
    proc = start_app(port, timeout=timeout, app_args=app_args)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def launch(p):
    """Headless Debian chromium with the project's flags, from a ``sync_playwright()`` handle ``p``."""
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@contextmanager
def chromium():
    """A launched chromium (Playwright ``Browser``) for a ``with`` block."""
    from playwright.sync_api import sync_playwright  # lazy: only the browser tests need Playwright

    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server():
    """The app with its defaults, one per test module: its URL."""
    with served() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """One chromium per test module (tests open their own pages or contexts)."""
    with chromium() as b:
        yield b


IDLE_JS = ("!document.querySelector('[data-testid=\"stStatusWidget\"]') && "
           "!document.querySelector('[data-testid=\"stSpinner\"]')")


def wait_idle(page, settle_ms: int = 400, timeout_ms: int = 180_000) -> None:
    """Wait until Streamlit finished the current run (the 'running' indicator and any spinner are gone; 300 ms first,
    as the indicator appears only a moment after a run starts), then ``settle_ms`` for charts to draw."""
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE_JS, timeout=timeout_ms)
    page.wait_for_timeout(settle_ms)


def open_page(browser, url: str, width: int = 1400, height: int = 900, idle=wait_idle, **options):
    """A new page (``width`` x ``height``, Playwright ``new_page`` ``options``) on ``url``, returned once the first
    chart is drawn and ``idle(page)`` returned."""
    page = browser.new_page(viewport={"width": width, "height": height}, **options)
    page.goto(url)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    idle(page)
    return page


def pick_model(page, name: str) -> None:
    """Open the page's first selectbox (Explore's model) and click the option ``name``."""
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=name).click()


def choose(page, label: str, text: str) -> None:
    """Pick ``text`` in the selectbox labelled ``label`` (typed and confirmed, as a person does with a keyboard)."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.locator("input").first.click()
    page.keyboard.type(text)
    page.wait_for_timeout(400)
    page.keyboard.press("Enter")
    wait_idle(page, 800)


def shots_dir() -> Path | None:
    """$SCREENSHOT_DIR (created) when it is set."""
    d = os.environ.get("SCREENSHOT_DIR")
    if not d:
        return None
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Screenshot into the test's tmp dir (and into $SCREENSHOT_DIR when set); fail if it is blank."""
    from PIL import Image, ImageStat  # lazy: only the browser tests take screenshots

    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    if shots_dir():
        page.screenshot(path=str(shots_dir() / f"{name}.png"))
    img = Image.open(path).convert("L")
    assert max(ImageStat.Stat(img).stddev) > 10, f"{path} looks blank"
    assert len(img.getcolors(maxcolors=1_000_000) or []) > 50, f"{path} has almost no distinct colours"
    return path


# Runs in the page: every problem a person would notice, as short strings.
PROBLEMS_JS = """() => {
  const out = [];
  const main = document.querySelector('[data-testid="stMain"]') || document.body;
  if (main.querySelector('[data-testid="stException"]')) out.push('exception box');
  main.querySelectorAll('[data-testid="stAlertContentError"]').forEach(e => out.push('error: ' + e.innerText.slice(0, 120)));
  const inside = (r, box) => r.left >= box.left - 2 && r.right <= box.right + 2 && r.top >= box.top - 2 && r.bottom <= box.bottom + 2;
  main.querySelectorAll('.js-plotly-plot').forEach((plot, i) => {
    const svg = plot.querySelector('.main-svg');
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    if (box.width < 10) return;
    plot.querySelectorAll('.infolayer .gtitle, .infolayer .g-gtitle text, .xtitle, .ytitle, .y2title').forEach(t => {
      const r = t.getBoundingClientRect();
      if (r.width && !inside(r, box)) out.push(`clipped title in chart ${i}: "${t.textContent.slice(0, 60)}"`);
    });
    const ticks = Array.from(plot.querySelectorAll('.xtick text')).map(t => t.getBoundingClientRect()).filter(r => r.width > 0);
    const legend = plot.querySelector('.legend');
    if (legend) { const lr = legend.getBoundingClientRect();
      if (ticks.some(r => Math.min(r.right, lr.right) - Math.max(r.left, lr.left) > 2 && Math.min(r.bottom, lr.bottom) - Math.max(r.top, lr.top) > 2))
        out.push(`legend over the axis labels in chart ${i}`); }
    for (let a = 0; a < ticks.length; a++) for (let b = a + 1; b < ticks.length; b++) {
      const w = Math.min(ticks[a].right, ticks[b].right) - Math.max(ticks[a].left, ticks[b].left);
      const h = Math.min(ticks[a].bottom, ticks[b].bottom) - Math.max(ticks[a].top, ticks[b].top);
      if (w > 2 && h > 2) out.push(`overlapping axis labels in chart ${i}`);
    }
    const labels = Array.from(plot.querySelectorAll('.bartext')).map(t => [t.textContent, t.getBoundingClientRect()])
      .filter(([s, r]) => s && r.width > 0);
    for (let a = 0; a < labels.length; a++) for (let b = a + 1; b < labels.length; b++) {
      const [sa, ra] = labels[a], [sb, rb] = labels[b];
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 2 && h > 2) out.push(`overlapping bar labels in chart ${i}: "${sa}" / "${sb}"`);
    }
  });
  main.querySelectorAll('button, label, [data-testid="stWidgetLabel"], [data-testid="stExpander"] summary, [data-testid="stMetric"]').forEach(el => {
    el.querySelectorAll('*').forEach(c => {
      const cs = getComputedStyle(c);
      if (cs.textOverflow === 'ellipsis' && c.scrollWidth > c.clientWidth + 1 && c.innerText && c.innerText.length > 3)
        out.push(`cut-off text: "${c.innerText.slice(0, 60)}"`);
    });
  });
  return Array.from(new Set(out));
}"""
