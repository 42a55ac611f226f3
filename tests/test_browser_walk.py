"""A projector-sized walk (1280x720, issue 24): Explore, Search, Advise, Experiments and Class with minilm-topics and
with a model brought as ``--workload FILE:workload``, in Debian's chromium driven by Playwright against
``dashboard/server.py``.

It fails on what a student at the back of the room would see as broken: a table wider than its box (a horizontal
scroll) or than the main column, labels drawn over each other in a chart (tick labels, axis titles, legend, bar and
cell texts), an exception or error line, a cut-off button or label; and on a control that changes nothing (on each
page one control is moved and some chart or table must change). First of all it opens page URLs directly on a
fresh server (``/search``, ``/recipe``): they must show the app's sectioned navigation, not Streamlit's automatic
list of ``pages/``. Screenshots go to $SCREENSHOT_DIR when it is set.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from browser_helpers import browser, needs_chromium, served  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
ROOT = Path(__file__).resolve().parent.parent
W, H = 1280, 720
MINILM = "minilm-topics"
TEACHER = "walk-teacher-1280"
T0 = [time.perf_counter()]

# Runs in the page: what a person would see as broken, as short strings.
PROBLEMS_JS = """() => {
  const out = [];
  const main = document.querySelector('[data-testid="stMain"]') || document.body;
  const column = (main.querySelector('[data-testid="stMainBlockContainer"]') || main).getBoundingClientRect();
  if (main.querySelector('[data-testid="stException"]')) out.push('exception box');
  main.querySelectorAll('[data-testid="stAlertContentError"]').forEach(e => out.push('error: ' + e.innerText.slice(0, 120)));
  const seen = r => r.width > 0 && r.height > 0;
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 2 &&
                            Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 2;
  // tables: no horizontal scroll inside, nothing past the main column
  main.querySelectorAll('[data-testid="stDataFrame"], [data-testid="stTable"]').forEach((t, i) => {
    const r = t.getBoundingClientRect();
    if (!seen(r)) return;  // in a closed expander
    const name = (t.innerText || '').split('\\n')[0].slice(0, 40);
    if (r.right > column.right + 2) out.push(`table ${i} ("${name}") overflows the main column`);
    [t, ...t.querySelectorAll('*')].forEach(c => {
      const ox = getComputedStyle(c).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && c.scrollWidth > c.clientWidth + 2)
        out.push(`table ${i} ("${name}") clipped: ${c.scrollWidth} px wide in ${c.clientWidth} px`);
    });
  });
  // charts: no two texts drawn over each other, titles inside the chart
  main.querySelectorAll('.js-plotly-plot').forEach((plot, i) => {
    const svg = plot.querySelector('.main-svg');
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    if (box.width < 10) return;
    const title = (plot.querySelector('.gtitle') || {}).textContent || `chart ${i}`;
    const inside = r => r.left >= box.left - 2 && r.right <= box.right + 2 && r.top >= box.top - 2 && r.bottom <= box.bottom + 2;
    plot.querySelectorAll('.gtitle, .xtitle, .ytitle, .y2title').forEach(t => {
      const r = t.getBoundingClientRect();
      if (seen(r) && !inside(r)) out.push(`"${title.slice(0, 50)}": title "${t.textContent.slice(0, 40)}" cut off`);
    });
    const texts = Array.from(plot.querySelectorAll('text')).filter(t => !t.closest('.hoverlayer') && t.textContent.trim())
      .map(t => [t.textContent.trim(), t.getBoundingClientRect()]).filter(([s, r]) => seen(r));
    for (let a = 0; a < texts.length; a++) for (let b = a + 1; b < texts.length; b++)
      if (overlap(texts[a][1], texts[b][1]))
        out.push(`"${title.slice(0, 50)}": labels overlap: "${texts[a][0].slice(0, 30)}" / "${texts[b][0].slice(0, 30)}"`);
  });
  main.querySelectorAll('button, label, [data-testid="stWidgetLabel"], [data-testid="stExpander"] summary, [data-testid="stMetric"]').forEach(el => {
    el.querySelectorAll('*').forEach(c => {
      const cs = getComputedStyle(c);
      if (cs.textOverflow === 'ellipsis' && c.scrollWidth > c.clientWidth + 1 && c.innerText && c.innerText.length > 3)
        out.push(`cut-off text: "${c.innerText.slice(0, 60)}"`);
    });
  });
  return Array.from(new Set(out)).slice(0, 20);
}"""

# What the charts show (their data, titles, lines and notes): compared before and after a control is moved.
CHARTS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')).map(p =>
  JSON.stringify([p.data || null, p.layout ? [p.layout.title, p.layout.shapes, p.layout.annotations] : null])).join('|')"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A class server with its own database and passcode, listing a workload file brought by the user."""
    d = tmp_path_factory.mktemp("walk")
    shutil.copy(ROOT / "examples" / "my_workload.py", d / "my_workload.py")  # its trained weights land in d
    with served(["--workload", f"{d / 'my_workload.py'}:workload", "--db", f"sqlite:///{d / 'walk.sqlite3'}",
                 "--teacher-code", TEACHER], timeout=180) as url:
        yield url


BUSY_JS = """() => !!(document.querySelector('[data-testid="stStatusWidget"]') ||
  document.querySelector('[data-testid="stSpinner"]') || document.querySelector('[data-stale="true"]'))"""


class Runs:
    """The page's websocket to the server, as Playwright sees it: the reruns the page asked for (``rerun_script``
    BackMsgs) since the last idle, and what the server said about its runs (ForwardMsgs)."""

    def __init__(self, page):
        self.asked = 0  # reruns asked for since the last idle
        self.done = False  # a run finished (not stopped for a rerun) after the last one asked for
        self.running = False  # the server's last session_status_changed
        self.received = 0  # ForwardMsgs received (heartbeats left out)
        page.on("websocket", lambda ws: (ws.on("framesent", self._sent), ws.on("framereceived", self._received)))

    def _sent(self, payload) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg  # lazy: only this test reads the app's messages

        if isinstance(payload, bytes) and BackMsg.FromString(payload).WhichOneof("type") == "rerun_script":
            self.asked += 1
            self.done = False

    def _received(self, payload) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # lazy: only this test reads the app's messages

        if not isinstance(payload, bytes):
            return
        msg = ForwardMsg.FromString(payload)
        kind = msg.WhichOneof("type")
        if kind == "heartbeat_ack":
            return
        self.received += 1
        if kind == "new_session":
            self.running, self.done = True, False
        elif kind == "session_status_changed":
            self.running = msg.session_status_changed.script_is_running
        elif kind == "script_finished" and msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
            self.done = True


RUNS: dict = {}  # page -> Runs, attached by test_walk_at_1280x720 before the page loads


def wait_idle(page, settle_ms: int = 500, timeout_s: float = 240) -> None:
    """Wait until Streamlit is idle (no 'running' indicator, no spinner, no greyed-out stale element), then let charts
    draw. Idle: either (as the page alone can tell) no indicator for 1.2 s in a row, as the indicators appear only a
    moment after a run starts; or, sooner, the rerun the page asked for is seen finished on the websocket (every run
    asked for since the last idle ended, the server says none is running, nothing else arrived for 0.3 s) and no
    indicator is shown."""
    runs = RUNS.get(page)
    deadline, quiet, still, received = time.monotonic() + timeout_s, 0, 0, -1
    while quiet < 12:
        busy = page.evaluate(BUSY_JS)
        quiet = 0 if busy else quiet + 1
        if runs is not None:
            still = still + 1 if runs.received == received else 0
            received = runs.received
            if not busy and runs.asked and runs.done and not runs.running and still >= 3:
                break
        assert time.monotonic() < deadline, f"Streamlit still busy after {timeout_s:.0f} s"
        page.wait_for_timeout(100)
    if runs is not None:
        runs.asked = 0
    page.wait_for_timeout(settle_ms)


def shot(page, name: str, tmp_path: Path) -> None:
    d = os.environ.get("SCREENSHOT_DIR")
    page.screenshot(path=str(tmp_path / f"{name}.png"))
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(d) / f"walk-{name}.png"))
        main = "document.querySelector('[data-testid=\"stMain\"]')"
        height = page.evaluate(f"() => {main}.scrollHeight")
        for k, y in enumerate(range(H - 120, min(height, 6 * (H - 120)), H - 120), 1):
            page.evaluate(f"(y) => {main}.scrollTo(0, y)", y)
            page.wait_for_timeout(250)
            page.screenshot(path=str(Path(d) / f"walk-{name}-{k}.png"))
        page.evaluate(f"() => {main}.scrollTo(0, 0)")


def check(page, where: str, problems: dict, tmp_path: Path) -> None:
    """Everything on the page, scrolled through (a chart draws its labels only once on screen)."""
    print(f"{time.perf_counter() - T0[0]:6.1f} s  {where}", flush=True)  # where the walk's minutes go (-s)
    main = "document.querySelector('[data-testid=\"stMain\"]')"
    height = page.evaluate(f"() => {main}.scrollHeight")
    found: list[str] = []
    for y in range(0, height, H - 160):
        page.evaluate(f"(y) => {main}.scrollTo(0, y)", y)
        page.wait_for_timeout(200)
        found += [p for p in page.evaluate(PROBLEMS_JS) if p not in found]
    page.evaluate(f"() => {main}.scrollTo(0, 0)")
    shot(page, re.sub(r"[^a-z0-9]+", "-", where.lower()).strip("-"), tmp_path)
    if found:
        problems[where] = found


def pick(page, label, option: str | int) -> None:
    """Choose ``option`` (its text, or its index in the list) in the selectbox labelled ``label``."""
    box = page.get_by_role("combobox", name=label).first
    for attempt in range(3):  # a rerun can redraw the box between the click and the list
        box.scroll_into_view_if_needed()
        box.click()
        if isinstance(option, str):  # typed: the list is virtualised, an option below its fold is not in the page
            box.fill(option)
        options = page.get_by_role("option")
        try:
            options.first.wait_for(timeout=5_000)
        except Exception:
            continue
        (options.nth(option) if isinstance(option, int) else page.get_by_role("option", name=option, exact=True)).click()
        break
    else:
        raise AssertionError(f"the list of {label!r} did not open")
    wait_idle(page)


def go(page, name: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=re.compile(rf"{re.escape(name)}$")).click()
    wait_idle(page, 800)


def changes(page, move, what: str, where: str, dead: list[str]) -> None:
    """Run ``move`` (a control) and record it in ``dead`` unless some chart on the page changed (data or titles)."""
    before = page.evaluate(CHARTS_JS)
    move()
    wait_idle(page, 800)
    try:
        page.wait_for_function(f"(b) => ({CHARTS_JS})() !== b", arg=before, timeout=45_000)
    except Exception:
        dead.append(f"{where}: {what} changed no chart")


def nav_sections(page) -> list[str]:
    page.locator('[data-testid="stSidebarNavLink"]').first.wait_for(timeout=120_000)
    return page.locator('[data-testid="stNavSectionHeader"]').all_inner_texts()


def test_walk_at_1280x720(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": W, "height": H})
    RUNS[page] = Runs(page)
    page.set_default_timeout(180_000)  # a first load of MiniLM on a busy machine takes a while
    T0[0] = time.perf_counter()
    try:
        walk(page, server, tmp_path)
    except Exception:
        shot(page, "failed-here", tmp_path)
        raise
    finally:
        page.close()


def walk(page, server: str, tmp_path: Path) -> None:
    # a page URL opened directly on a fresh server: the app's sections, not Streamlit's list of pages/
    for path in ("search", "recipe"):
        page.goto(f"{server}/{path}")
        wait_idle(page)
        sections = [s.strip() for s in nav_sections(page)]
        links = [t.split("\n")[-1].strip() for t in page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()]
        assert sections[:2] == ["Compress", "Learn"], (path, sections, links)
        assert "app" not in links and "learn pruning" not in links and "Explore" in links, (path, links)

    problems: dict[str, list[str]] = {}
    dead: list[str] = []
    mine = "my-resnet (my_workload.py:workload)"  # the model list's label of the --workload file
    page.goto(server)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    wait_idle(page)

    # Explore: each model, one control moved
    for model in (MINILM, mine):
        pick(page, "Model", model)
        page.get_by_text("structured (neurons / channels / heads)", exact=True).click()
        wait_idle(page, 800)
        slider = page.locator("[data-testid=stSlider] input[type=range]").first
        changes(page, lambda: (slider.focus(), [page.keyboard.press("ArrowRight") for _ in range(4)]),
                "the first pruning slider", f"Explore {model}", dead)
        check(page, f"Explore {model}", problems, tmp_path)
    page.get_by_role("button", name="Save to history").click()
    wait_idle(page)

    # Search: a short search on the user's model; the front point picked shows on the chart
    go(page, "Search")
    pick(page, "Model", MINILM)
    check(page, f"Search {MINILM}", problems, tmp_path)
    pick(page, "Model", mine)
    trials = page.get_by_label("Trials")
    trials.fill("5")
    trials.press("Tab")
    wait_idle(page)
    page.get_by_role("button", name="Start search").click()
    page.get_by_text(re.compile(r"5/5 trials.*done")).wait_for(timeout=180_000)
    wait_idle(page, 800)
    check(page, f"Search {mine}", problems, tmp_path)

    changes(page, lambda: pick(page, re.compile("^Front point"), 0), "the front point picked", f"Search {mine}", dead)

    # Advise: each model; the threshold slider moves the chart's threshold line
    go(page, "Advise")
    for model in (MINILM, mine):
        pick(page, "Model", model)
        check(page, f"Advise {model}", problems, tmp_path)
    slider = page.locator("[data-testid=stSlider] input[type=range]").first  # on the small model: a move re-measures
    changes(page, lambda: (slider.focus(), [page.keyboard.press("ArrowRight") for _ in range(5)]),
            "the accuracy-drop slider", f"Advise {mine}", dead)

    # Experiments: both models' rows; comparing another row moves the chart's highlight
    go(page, "Experiments")
    check(page, "Experiments", problems, tmp_path)

    changes(page, lambda: pick(page, "with row", 0), "the row compared", "Experiments", dead)  # off the last row

    # Class: the teacher sets a challenge on each model; the board's chart follows it
    go(page, "Class")
    page.get_by_text("Teacher", exact=True).click()
    page.get_by_label("Teacher passcode").fill(TEACHER)
    page.get_by_role("button", name="Enter teacher mode").click()
    wait_idle(page)
    for model in (mine, MINILM):
        pick(page, "Model", model)
        changes(page, lambda: page.get_by_role("button", name=re.compile("Set challenge")).click(),
                "setting the challenge", f"Class {model}", dead)
        check(page, f"Class {model}", problems, tmp_path)

    assert not problems and not dead, {**problems, "controls that changed nothing": dead}
