"""benchmarks.live: the JSON's shape (every key the issue names, ``previous`` alike) and how a move's stage times are
read from the page's stamped changes (new contract and the old preview caption). No timing is asserted."""

from __future__ import annotations

import json

import pytest

from benchmarks import live


def test_json_has_every_key_and_previous_alike(monkeypatch):
    monkeypatch.setattr(live, "worktree", lambda rev: "/nonexistent")
    monkeypatch.setattr(live, "remove_worktree", lambda path: None)
    r = live.run("digits-cnn", moves=1, compare_with="HEAD", with_browser=False, with_sensitivity=False,
                 quality_n=0, with_cost=False)
    for k in live.KEYS:
        assert k in r and k in r["previous"], k
    assert r["previous"]["rev"] == "HEAD"
    json.dumps(r)  # --json prints it
    text = live._text(r)
    assert "estimate_ms" in text and "goal" in text


def test_stage_times_follow_the_contract_and_the_old_caption():
    before = "File size 155 KB | Accuracy 98.6 %"
    recs = [
        {"t": 90.0, "stage": "Stage: full test set — measured on all 360 test items.", "metrics": before},
        {"t": 130.0, "stage": "Stage: estimate — size ...; the accuracy estimate is being prepared (running).",
         "metrics": "File size 80 KB | Accuracy …"},
        {"t": 700.0, "stage": "Stage: preview — measured on 60 of 318 test sentences", "metrics": "x"},
        {"t": 3100.0, "stage": "Stage: full test set — measured on all 318 test sentences.", "metrics": "y"},
    ]
    got = live._stage_times(recs, 100.0, before)
    assert got["size_ms"] == 30.0 and got["estimate_ms"] == 30.0 and got["preview_ms"] == 600.0
    assert got["full_ms"] == 3000.0 and got["estimate_has_metric"] is False
    # a toy model: straight to the full test set, seen as new numbers under the same stage line
    toy = [{"t": 150.0, "stage": "Stage: full test set — measured on all 360 test items.", "metrics": "new"}]
    t = live._stage_times(toy, 100.0, before)
    assert t["full_ms"] == 50.0 and t["estimate_ms"] is None and t["preview_ms"] is None
    # a checkout from before the stages: the old preview caption, then its disappearance with new numbers
    old = [{"t": 400.0, "stage": "OLD preview: preview on 60 of 318 test sentences", "metrics": "p"},
           {"t": 2400.0, "stage": "", "metrics": "f"}]
    o = live._stage_times(old, 100.0, before)
    assert o["preview_ms"] == 300.0 and o["full_ms"] == 2300.0


def test_new_numbers_under_the_last_moves_full_line_are_not_this_moves_full_stage():
    before = "a"
    recs = [{"t": 150.0, "stage": "Stage: full test set — measured on all 318 test sentences.", "metrics": "b"},
            {"t": 180.0, "stage": "Stage: estimate — ...", "metrics": "b"},
            {"t": 900.0, "stage": "Stage: preview — ...", "metrics": "c"},
            {"t": 4100.0, "stage": "Stage: full test set — measured on all 318 test sentences.", "metrics": "d"}]
    got = live._stage_times(recs, 100.0, before)
    assert got["size_ms"] == 50.0 and got["estimate_ms"] == 80.0 and got["full_ms"] == 4000.0
    assert live._stage_times(recs[:3], 100.0, before)["full_ms"] is None  # still measuring


def test_cost_growth_times_the_pages_move_work_on_a_blocked_model():
    c = live.cost_growth("digits-vit", repeats=1)
    assert c["blocks"] == 2 and c["first_block_layers"] == c["last_block_layers"] == 4
    for which in ("first", "last"):
        assert set(c[f"{which}_block_parts"]) == {"cost_s", "apply_s", "preview_s", "full_s"}
    assert c["last_over_first"] == c["last_block_s"] / c["first_block_s"]
    assert c["recorded_mib"] > 0  # the evaluator really recorded block outputs to replay
    assert live.cost_growth("digits-mlp")["why"]  # no repeated blocks: says so instead of a ratio


@pytest.mark.slow
def test_the_page_load_floor_serves_a_minimal_page_and_takes_the_warm_median(monkeypatch):
    """``page_load_floor`` starts a real minimal Streamlit server (it must answer its health check) and returns the
    median of the loads after the first; the browser here is a stand-in whose page loads take known times."""
    import urllib.request

    times = iter([5.0, 1.0, 3.0, 2.0])
    clock = [0.0]
    served = []

    class Page:
        def goto(self, url):
            with urllib.request.urlopen(url, timeout=30) as r:  # the minimal app's page, really served
                served.append(r.status)
            clock[0] += next(times)

        def locator(self, css):
            assert css == ".js-plotly-plot"
            return self

        @property
        def first(self):
            return self

        def wait_for(self, timeout):
            pass

        def close(self):
            pass

    class Browser:
        def new_page(self, viewport):
            return Page()

    monkeypatch.setattr(live.time, "perf_counter", lambda: clock[0])
    assert live.page_load_floor(Browser()) == 2.0
    assert served == [200] * 4
