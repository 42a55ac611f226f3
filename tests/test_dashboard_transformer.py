"""The dashboard on a real transformer (minilm-topics, issue 16): a student moves the head-pruning slider on Explore
and sees size, accuracy and fidelity change; the first numbers come from a stated preview subset and the whole test
set fills in afterwards. The Learn page "Compressing a transformer" renders with live numbers. In chromium, on one
server for the module: the stages (tests/test_explore_stages.py's contract), the head-pruning slider, and the language
model (tiny-lm): pruning harder raises perplexity, drawn as worse."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from browser_helpers import browser, needs_chromium, open_page, pick_model, server, wait_idle  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
MODEL = "minilm-topics"
STRUCTURED = "structured (neurons / channels / heads)"
PREFIXES = ("Stage: estimate", "Stage: preview", "Stage: full test set")
LM = "tiny-lm"  # the language-model sample (perplexity: lower is better)
UNSTRUCTURED = "unstructured (weights)"

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]

# the numbers on screen are final: the Explore page says "Stage: full test set" (or, before the staged view, no
# preview note is left)
SETTLED = ("() => { const t = document.body ? document.body.innerText : '';"
           " return t.includes('Stage: full test set') || (!t.includes('Stage:') && !t.includes('preview on')); }")


VALUE_CHANGED = """(before) => {
    const box = [...document.querySelectorAll('[data-testid="stMetric"]')].find(e => e.innerText.includes('Perplexity'));
    const v = box && box.querySelector('[data-testid="stMetricValue"]');
    return v && v.innerText !== before;
}"""


def _number(text: str) -> float:
    return float(re.search(r"[-+]?\d[\d,]*\.?\d*", text).group(0).replace(",", ""))


@pytest.fixture(autouse=True)
def _join_background_measurements():
    """Wait for the page's background measurements (threads) so none is running when the interpreter exits. The test
    is over: moves the Explore pipeline (dashboard/state/previews.py) still has queued, older than the one the test
    waited for, are dropped first instead of being measured for nobody (MiniLM: ~15 s each)."""
    yield
    import threading

    for t in threading.enumerate():
        if t.name in ("full-measure", "explore-stages", "explore-prepare"):
            pipeline = getattr(getattr(t, "_target", None), "__self__", None)  # the _Pipeline whose _run it runs
            if pipeline is not None and hasattr(pipeline, "pending") and hasattr(pipeline, "cond"):
                with pipeline.cond:
                    pipeline.pending.clear()
            t.join(timeout=600)


def metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.proto.delta) for m in at.metric}


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def stage(at: AppTest) -> str:
    """The page's one stage line (Explore states which numbers it shows: estimate, preview or full test set)."""
    shown = [c.value for c in at.caption if c.value.startswith("Stage: ")]
    assert len(shown) == 1, shown
    return shown[0]


def no_problems(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_extra_metrics_and_preview_come_from_workload_info():
    from compression_core import extra_metrics
    from compression_core.workload import resolve_workload

    wl = resolve_workload(MODEL)
    assert set(extra_metrics.extra_metrics(wl)) == {"fidelity"}
    n = extra_metrics.preview_items(wl)
    assert n is not None and 0 < n < len(wl.test)
    assert len(extra_metrics.preview_workload(wl, n).test) == n
    assert extra_metrics.compute(wl.model, wl, n=8)["fidelity"] == pytest.approx(1.0, abs=1e-5)
    small = resolve_workload("digits-mlp")
    assert extra_metrics.extra_metrics(small) == {} and extra_metrics.preview_items(small) is None


def test_head_pruning_slider_on_minilm_changes_size_accuracy_and_fidelity():
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.selectbox(key="x_model").set_value(MODEL).run()
    no_problems(at)
    base_acc = at.session_state["history"][-1]["accuracy"]
    base_size = at.session_state["history"][-1]["size_bytes"]
    at.radio(key=f"x_prune_{MODEL}").set_value(STRUCTURED).run()
    assert "heads" in at.radio(key="x_prune_structured_unit").options
    at.radio(key="x_prune_structured_unit").set_value("heads").run()
    at.slider(key="x_prune_structured_amount").set_value(0.25).run()
    no_problems(at)
    steps = at.session_state["current_recipe"]["steps"]
    assert steps[0]["kind"] == "prune_structured" and steps[0]["unit"] == "heads" and steps[0]["amount"] == 0.25

    # the move's stages, each stated in one line: the estimate at once (size computed), the preview subset, then the
    # whole test set (state/stages.py logs them in that order: tests/test_explore_stages.py)
    assert stage(at).startswith(("Stage: estimate", "Stage: preview")), stage(at)
    assert float(metrics(at)["File size (dense)"][1].split("x")[0]) < 0.99  # computed at once: heads removed, shrunk
    deadline = time.monotonic() + 300
    while stage(at).startswith("Stage: estimate") and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    no_problems(at)
    m = metrics(at)
    text = stage(at)
    found = re.search(r"Stage: preview — measured on (\d+) of (\d+) test sentences", text)
    assert found, text
    assert int(found.group(1)) < int(found.group(2))
    assert "Fidelity" in m and "Accuracy (preview)" in m
    assert float(m["File size (dense)"][1].split("x")[0]) < 0.99  # heads removed and shrunk (the embedding table stays)
    preview_fid = float(m["Fidelity"][0])
    assert 0.0 < preview_fid < 0.999  # half the heads gone: the embeddings moved

    # the whole test set fills in (a background thread); the page polls and then shows the full numbers
    deadline = time.monotonic() + 300
    while not stage(at).startswith("Stage: full test set") and time.monotonic() < deadline:
        time.sleep(2)
        at.run()
    no_problems(at)
    assert stage(at).startswith("Stage: full test set")
    m = metrics(at)
    row = at.session_state["history"][-1]
    assert not row["baseline"] and row["size_bytes"] < 0.99 * base_size
    assert row["accuracy"] != base_acc  # the accuracy moved (measured on all test sentences now)
    assert 0.0 < float(m["Fidelity"][0]) < 0.999


def test_learn_transformer_page_measures_heads_and_int8_live():
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page("pages/learn_transformer.py").run()
    no_problems(at)
    assert at.selectbox(key="lt_model").value == MODEL
    assert re.search(r"preview of (\d+) of (\d+) test sentences", captions(at))
    at.button(key="lt_b_heads").click().run()
    at.button(key="lt_b_int8").click().run()
    no_problems(at)
    rows = at.session_state["lt_rows"]
    heads, int8 = rows["heads -50%"], rows["int8 dynamic + int8 embeddings"]
    assert heads["size (x of before)"] < 0.99 and 0 < heads["fidelity"] < 0.999
    assert int8["size (x of before)"] < 0.35 and int8["fidelity"] > 0.9  # int8 everywhere: about a quarter
    assert at.get("plotly_chart")  # the summary chart of what was measured


@pytest.mark.browser
@needs_chromium
def test_browser_each_stage_shows_one_label_and_the_chart_equals_the_metric(server, browser, tmp_path):
    """In chromium on minilm-topics: after a move, at every stage the page shows exactly one 'Stage:' line and the
    accuracy chart's after value is the accuracy metric's value (or neither has one while the estimate is prepared).
    (tests/test_explore_stages.py's contract, in a new session on this module's server: the move, unstructured
    pruning, is one no session before made.)"""

    # what a student sees: visible elements only (while a run is in progress Streamlit keeps the elements it
    # replaced as hidden copies, display: none, until the run ends; a slider move's run lasts until its next stage)
    read = """() => {
        const all = sel => [...document.querySelectorAll(sel)].filter(e => e.checkVisibility());
        const lines = all('[data-testid="stCaptionContainer"]')
            .map(e => e.innerText.trim()).filter(t => t.startsWith('Stage: '));
        const box = all('[data-testid="stMetric"]').find(m => m.innerText.trim().startsWith('Accuracy'));
        const metric = box ? box.querySelector('[data-testid="stMetricValue"]').innerText.trim() : null;
        const plot = all('.js-plotly-plot')
            .find(g => g.layout && String((g.layout.title || {}).text || '').includes('Test accuracy'));
        const bars = plot && plot.data && plot.data[0] ? plot.data[0].text : null;
        const titles = all('.js-plotly-plot').map(g => JSON.stringify(g.layout ? g.layout.title : null));
        const busy = !!document.querySelector('[data-testid="stStatusWidget"]');
        return {lines, metric, bars, busy, titles};
    }"""

    def idle(page):
        wait_idle(page, 300, timeout_ms=300_000)

    page = open_page(browser, server, idle=idle)
    pick_model(page, MODEL)
    page.get_by_text("Baseline test accuracy 82", exact=False).wait_for(timeout=300_000)  # minilm's caption
    idle(page)
    page.get_by_text("unstructured (weights)", exact=True).click()
    page.get_by_text("Stage: ", exact=False).first.wait_for(timeout=300_000)
    stages, readings, deadline = {}, [], time.monotonic() + 600
    while time.monotonic() < deadline:
        page.wait_for_timeout(200)
        s = page.evaluate(read)
        if not s["lines"]:
            continue
        page.wait_for_timeout(300)  # settled: the same reading twice, not a page half redrawn
        again = page.evaluate(read)
        if {k: v for k, v in again.items() if k != "busy"} != {k: v for k, v in s.items() if k != "busy"}:
            continue
        assert len(s["lines"]) == 1, s["lines"]
        if s not in readings:
            readings.append(s)
        kind = next(k for k in PREFIXES if s["lines"][0].startswith(k))
        stages.setdefault(kind, s)
        if kind == "Stage: full test set" and "Stage: preview" in stages:
            break
    page.screenshot(path=str(tmp_path / "stages.png"))
    (tmp_path / "readings.json").write_text(json.dumps(readings, indent=1))
    # a second move, from a page showing the whole test set's line: while it waits for its preview (its run stays
    # open), the first move's "Stage: full test set" line must not stay on screen beside the new estimate line
    page.locator("[data-testid=stSlider] input[type=range], [data-testid=stSlider] [role=slider]").first.focus()
    page.keyboard.press("ArrowRight")
    counts = []
    for _ in range(40):
        counts.append(len(page.evaluate(read)["lines"]))
        page.wait_for_timeout(100)
    page.close()
    doubled = [i for i in range(1, len(counts)) if counts[i] > 1 and counts[i - 1] > 1]
    assert not doubled, counts  # two stage lines for 0.1 s or more
    assert {"Stage: preview", "Stage: full test set"} <= set(stages), stages
    for kind, s in stages.items():
        if s["metric"] == "…":  # the estimate is being prepared: the chart has the baseline's bar only
            assert kind == "Stage: estimate" and s["bars"] is not None and len(s["bars"]) == 1, (s, readings)
        else:
            assert s["bars"] is not None and s["bars"][1] == s["metric"], (kind, s, readings)


@pytest.mark.browser
@needs_chromium
def test_browser_head_pruning_slider_on_minilm(server, browser, tmp_path):
    """In chromium: pick minilm-topics on Explore, structured pruning of heads, move the slider: the stage shown is
    stated ('Stage: preview', then 'Stage: full test set'), size, accuracy and fidelity change. (A new session on
    this module's server, after the stages test's: the moves, structured pruning of heads, are ones no session made.)"""

    def idle(page):
        wait_idle(page, 300, timeout_ms=300_000)

    def metric(page, label):
        box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
        try:
            box.wait_for(timeout=300_000)
        except Exception:  # say what the page showed instead
            page.screenshot(path=str(tmp_path / "missing-metric.png"))
            shown = page.locator('[data-testid="stMain"]').inner_text()[:3000]
            raise AssertionError(f"no {label!r} metric on the page; it shows:\n{shown}") from None
        return box.inner_text()

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    # The preview may be replaced by the whole test set within a few hundred ms on a fast machine: a
    # MutationObserver records that it was shown, so the test does not race the dashboard.
    page.add_init_script("""
        window.__previews = 0;
        new MutationObserver(() => {
            const shown = /Stage: preview/.test(document.body ? document.body.textContent : "");
            if (shown && !window.__previewShown) window.__previews += 1;
            window.__previewShown = shown;
        }).observe(document, {subtree: true, childList: true, characterData: true});
    """)
    page.goto(server)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    idle(page)
    pick_model(page, MODEL)
    page.get_by_text("Baseline test accuracy 82", exact=False).wait_for(timeout=300_000)  # minilm's caption
    idle(page)
    page.get_by_text(STRUCTURED, exact=True).click()
    page.get_by_text("heads", exact=True).wait_for(timeout=300_000)
    idle(page)
    seen = page.evaluate("window.__previews")
    page.get_by_text("heads", exact=True).click()
    page.wait_for_function(f"window.__previews > {seen}", timeout=300_000)
    idle(page)
    main = page.locator('[data-testid="stMain"]')
    page.wait_for_function("() => document.body.innerText.includes('Stage: full test set')", timeout=300_000)
    idle(page)
    before = {k: metric(page, k) for k in ("Accuracy", "File size", "Fidelity")}
    slider = page.locator("[data-testid=stSlider] input[type=range], [data-testid=stSlider] [role=slider]").first
    slider.wait_for(state="attached", timeout=60_000)
    slider.focus()
    seen = page.evaluate("window.__previews")
    for _ in range(5):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"window.__previews > {seen}", timeout=300_000)
    page.wait_for_function("() => document.body.innerText.includes('Stage: full test set')", timeout=300_000)
    idle(page)
    after = {k: metric(page, k) for k in ("Accuracy", "File size", "Fidelity")}
    assert all(after[k] != before[k] for k in before), (before, after)
    assert not main.locator('[data-testid="stException"]').count()
    page.screenshot(path=str(tmp_path / "minilm-heads.png"))
    page.close()


@pytest.mark.browser
@needs_chromium
def test_browser_two_students_moving_at_once_each_see_their_own_full_numbers(server, browser, tmp_path):
    """In chromium, two sessions on minilm-topics move at the same moment (each move waits for its next stages in its
    own run, both measured by the server's one stage thread): each reaches 'Stage: full test set' showing the numbers
    of its OWN setting, and the one that moves again while its first move still waits (the wait gives way) ends on
    its last setting. (Sparsities lowered from the default, which no session of this module set before.)"""
    visible_stage = """() => ([...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
        .filter(e => e.checkVisibility()).map(e => e.innerText).find(t => t.startsWith('Stage: ')) || '')"""

    def idle(page):
        wait_idle(page, 300, timeout_ms=300_000)

    def shown(page, label):
        box = page.locator('[data-testid="stMetric"]').filter(has_text=label)
        return next(box.nth(i).inner_text() for i in range(box.count()) if box.nth(i).is_visible())

    pages = []
    for _ in range(2):
        page = open_page(browser, server, idle=idle)
        pick_model(page, MODEL)
        page.get_by_text("Baseline test accuracy 82", exact=False).wait_for(timeout=300_000)
        idle(page)
        page.get_by_text("unstructured (weights)", exact=True).click()
        page.wait_for_function(f"() => ({visible_stage})().startsWith('Stage: full test set')", timeout=300_000)
        idle(page)
        pages.append(page)
    a, b = pages
    slider = "[data-testid=stSlider] input[type=range], [data-testid=stSlider] [role=slider]"

    def value(page) -> float:
        return float(page.evaluate("() => document.querySelector('[data-testid=stSlider] input[type=range]').value"))

    def lower(page, steps: int) -> None:
        """``steps`` presses of the left arrow, each one checked: under the full suite's load a press could be lost
        while the page redrew the slider (it ended 2 steps down instead of 6), or taken back: the slider sends its
        new value after a short debounce, and a redraw from a run that started before the press arrived put the
        old value back (seen once: a page ended one step up). So a press counts once the value has stayed lowered
        for 0.4 s; a lost or taken-back press is pressed again."""
        for _ in range(steps):
            before = value(page)
            for _ in range(10):
                page.locator(slider).first.focus()
                page.keyboard.press("ArrowLeft")
                page.wait_for_timeout(50)
                if value(page) < before:
                    page.wait_for_timeout(400)
                    if value(page) < before:
                        break
            assert value(page) < before, f"the slider did not move from {before}"

    lower(a, 2)
    lower(b, 4)
    a.wait_for_timeout(300)  # a's first move is waiting for its stages: a moves once more
    lower(a, 1)
    for page in pages:
        page.wait_for_function(f"() => ({visible_stage})().startsWith('Stage: full test set')", timeout=300_000)
        idle(page)
        page.wait_for_function(f"() => ({visible_stage})().startsWith('Stage: full test set')", timeout=300_000)
    values = [p.evaluate("() => document.querySelector('[data-testid=stSlider] input[type=range]').value")
              for p in pages]
    nonzero = [_number([line for line in shown(p, "Non-zero parameters").splitlines() if line.strip()][1])
               for p in pages]
    for i, page in enumerate(pages):
        page.screenshot(path=str(tmp_path / f"student-{i}.png"))
        assert not page.locator('[data-testid="stException"]').count()
    # a lowered its sparsity 3 steps, b 4 (each press checked above)
    assert float(values[0]) > float(values[1]), values
    # each shows the numbers of its own LAST setting (a's second move gave way to its third), from the library
    from compression_core import estimate_cost
    from compression_core.workload import resolve_workload

    wl = resolve_workload(MODEL)
    want = [estimate_cost(wl.model, [{"kind": "prune_unstructured", "amount": float(v)}], wl).nonzero_params
            for v in values]
    assert nonzero == want, (values, nonzero, want)
    for page in pages:
        page.close()


@pytest.mark.browser
@needs_chromium
def test_browser_pruning_harder_raises_perplexity_shown_as_worse(server, browser, tmp_path):
    """In chromium, Explore on the language-model sample (tiny-lm, perplexity: lower is better): pruning harder makes
    perplexity RISE, the delta under it is drawn as worse (red: st.metric's inverse colours) and the page shows no
    exception. (A new session on this module's server, after the MiniLM tests'.)"""
    from compression_core.workload import registered_workloads

    if LM not in registered_workloads():
        pytest.skip(f"{LM} is not registered")

    def idle(page):
        wait_idle(page, 0, timeout_ms=300_000)
        page.wait_for_function(SETTLED, timeout=300_000)
        page.wait_for_timeout(300)

    def perplexity(page) -> tuple[float, str, str]:
        """(value, delta text, delta colour) of the Perplexity metric as drawn."""
        box = page.locator('[data-testid="stMetric"]').filter(has_text="Perplexity").first
        try:
            box.wait_for(timeout=300_000)
        except Exception:  # say what the page showed instead
            page.screenshot(path=str(tmp_path / "missing-metric.png"))
            raise AssertionError("no Perplexity metric; the page shows:\n"
                                 + page.locator('[data-testid="stMain"]').inner_text()[:3000]) from None
        value = box.locator('[data-testid="stMetricValue"]').inner_text()
        delta = box.locator('[data-testid="stMetricDelta"]')
        colour = delta.evaluate("e => getComputedStyle(e).color")
        return _number(value), delta.inner_text(), colour

    def red(colour: str) -> bool:
        r, g, b = (int(v) for v in re.findall(r"\d+", colour)[:3])
        return r > 150 and r > g + 60 and r > b + 60

    page = open_page(browser, server, idle=idle)
    pick_model(page, LM)
    page.get_by_text("Baseline test perplexity", exact=False).wait_for(timeout=300_000)  # the LM is shown
    # .first: while the page re-renders after the model choice, the old radio can still be in the DOM
    page.get_by_text(UNSTRUCTURED, exact=True).first.wait_for(timeout=300_000)
    idle(page)
    page.get_by_text(UNSTRUCTURED, exact=True).first.click()  # the default sparsity, measured
    page.locator('[data-testid="stMetric"]').filter(has_text="Perplexity").first.wait_for(timeout=300_000)
    idle(page)
    first, first_delta, first_colour = perplexity(page)
    first_text = page.locator('[data-testid="stMetric"]').filter(has_text="Perplexity").first.locator(
        '[data-testid="stMetricValue"]').inner_text()
    slider = page.locator("[data-testid=stSlider] input[type=range], [data-testid=stSlider] [role=slider]").first
    slider.wait_for(state="attached", timeout=60_000)
    slider.focus()
    for _ in range(12):  # sparsity up by 12 steps: prune harder
        page.keyboard.press("ArrowRight")
    page.wait_for_function(VALUE_CHANGED, arg=first_text, timeout=300_000)  # the move reached the page
    idle(page)
    harder, delta, colour = perplexity(page)
    page.screenshot(path=str(tmp_path / "tiny-lm-perplexity.png"))
    assert harder > first, (first, harder)  # pruning harder raises perplexity
    assert delta.lstrip().startswith("+") and red(colour), (delta, colour)  # a rise, drawn as worse
    # whichever way the default setting moved it, a rise is red and a fall is not (inverse colours)
    assert red(first_colour) == first_delta.lstrip().startswith("+"), (first_delta, first_colour)
    assert not page.locator('[data-testid="stException"]').count()
    page.close()
