"""In chromium, Explore on the language-model sample (tiny-lm, perplexity: lower is better): pruning harder makes
perplexity RISE, the delta under it is drawn as worse (red: st.metric's inverse colours) and the page shows no
exception."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser_helpers import chromium, open_page, pick_model, served, skip_without_chromium, wait_idle

ROOT = Path(__file__).resolve().parent.parent
MODEL = "tiny-lm"
UNSTRUCTURED = "unstructured (weights)"

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow, pytest.mark.browser]

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


def test_browser_pruning_harder_raises_perplexity_shown_as_worse(tmp_path):
    from compression_core.workload import registered_workloads

    skip_without_chromium()
    if MODEL not in registered_workloads():
        pytest.skip(f"{MODEL} is not registered")

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

    with served() as url:
        with chromium() as b:
            page = open_page(b, url, idle=idle)
            pick_model(page, MODEL)
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
