"""A lower-is-better metric (perplexity) handled in its own units everywhere: search minimises it, fit_budget
reads its budget as a percent rise, deltas and arrows are inverted, charts name it, advisories and reports say so.
The workload: digits-mlp scored by perplexity (tests/ppl_workload.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compression_core import CompressionError
from compression_core.budget import fit_budget
from compression_core.search import SearchPoint, pareto_front, search
from compression_core.workload import better, loss_unit, metric_loss, metric_up, resolve_workload

REF = str(Path(__file__).resolve().parent / "ppl_workload.py") + ":workload"


@pytest.fixture(scope="module")
def wl():
    return resolve_workload(REF)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_metric_loss_is_points_or_percent_rise(wl):
    assert metric_up(wl.metric) is False and metric_up(None) is True
    assert metric_loss(wl.metric, 20.0, 21.0) == pytest.approx(5.0)  # perplexity 20 -> 21: 5 % worse
    assert metric_loss(wl.metric, 20.0, 19.0) == pytest.approx(-5.0)  # better is negative
    assert metric_loss(None, 0.90, 0.88) == pytest.approx(2.0)  # accuracy: points
    assert loss_unit(wl.metric) == "% rise" and loss_unit(None) == "points"
    assert better(wl.metric, 1.1, 1.2) and not better(None, 0.1, 0.2)


def test_measure_reports_the_direction_and_units(wl):
    from compression_core import StepContext, apply_step, measure
    from compression_core.prune import UnstructuredPruneConfig
    b = measure(wl.model, wl, with_latency=False)
    assert (b.metric, b.higher_is_better, b.metric_percent) == ("perplexity", False, False)
    assert b.metric_text() == f"{b.accuracy:.4g}" and "%" not in b.metric_text()
    pruned = apply_step(wl.model, UnstructuredPruneConfig(amount=0.9), StepContext(data=wl))
    assert wl.score(pruned) > b.accuracy  # compressing hard raises perplexity


def test_pareto_front_minimises_a_lower_is_better_metric():
    def pt(i, ppl, size):
        return SearchPoint(trial=i, origin="search", settings={}, recipe={}, accuracy=ppl, size_bytes=size,
                           feasible=True)
    pts = [pt(0, 1.2, 100), pt(1, 1.5, 100), pt(2, 2.0, 50), pt(3, 1.8, 60)]
    assert [p.trial for p in pareto_front(pts, higher_is_better=False)] == [2, 3, 0]  # 1: as big, higher ppl
    assert [p.trial for p in pareto_front(pts)] == [2]  # read as accuracy, 50 bytes at 2.0 beats all


def test_search_minimises_perplexity_and_its_drop_bound_is_a_rise(wl):
    res = search(REF, trials=8, batch_size=4, seed=0, max_drop=10.0, fit_seeds=False)
    assert res.higher_is_better is False and res.metric == "perplexity"
    base = res.baseline["accuracy"]
    ok = [p for p in res.points if p.error is None]
    for p in ok:  # feasible exactly when perplexity rose by at most 10 %
        assert p.feasible == ((p.accuracy - base) / base * 100 <= 10.0 + 1e-9)
    front = res.front
    assert front and all(p.feasible for p in front)
    feasible = [p for p in ok if p.feasible]
    best = min(feasible, key=lambda p: p.accuracy)
    assert min(p.accuracy for p in front) == pytest.approx(best.accuracy)  # the lowest perplexity is on the front
    for p in front:  # no feasible point is smaller AND lower in perplexity
        assert not any(q.size_bytes <= p.size_bytes and q.accuracy < p.accuracy - 1e-12 for q in feasible)


def test_fit_budget_reads_the_budget_as_a_percent_rise_of_perplexity(wl):
    fit = fit_budget(wl.model, wl, {"max_accuracy_drop": 5.0})
    assert (fit.metric, fit.higher_is_better, fit.drop_unit) == ("perplexity", False, "% rise")
    rise = (fit.accuracy - fit.baseline_accuracy) / fit.baseline_accuracy * 100
    assert rise <= 5.0 + 1e-6  # never more than +5 % perplexity on calibration
    assert fit.calibration_drop_points == pytest.approx(rise)
    assert any(v > 0 for v in fit.choice.values())  # and it did compress
    tight = fit_budget(wl.model, wl, {"max_accuracy_drop": 0.0})
    assert tight.accuracy <= tight.baseline_accuracy + 1e-9  # a zero budget refuses every move that raises it


def test_collapse_warns_when_perplexity_more_than_doubles(wl):
    from compression_core.advisories import collapse
    assert collapse(1.2, 1.3, wl) is None
    line = collapse(1.2, 3.0, wl)
    assert line and "perplexity" in line and "lower is better" in line


# ----------------------------------------------------------------------------------------------- dashboard
ROOT = Path(__file__).resolve().parent.parent


def _dashboard():
    import sys
    if str(ROOT / "dashboard") not in sys.path:
        sys.path.insert(0, str(ROOT / "dashboard"))


PPL = {"metric": "perplexity", "percent": False, "higher_is_better": False}


def test_deltas_are_inverted_and_in_the_metrics_own_units():
    _dashboard()
    from state.workloads import delta_color, metric_axis, metric_delta
    assert delta_color(PPL) == "inverse" and delta_color({"percent": True}) == "normal"
    assert metric_delta(21.0, 20.0, PPL) == "+1.0000 (+5.0 %)"  # a rise, shown red by delta_color="inverse"
    assert metric_delta(0.95, 0.97, {"percent": True}) == "-2.00 points"
    assert metric_axis(PPL) == "perplexity, lower is better"


def test_accuracy_chart_names_perplexity_and_says_worse():
    _dashboard()
    import charts
    fig = charts.accuracy_chart({"accuracy": 20.0}, {"accuracy": 25.0}, "perplexity", percent=False,
                                higher_is_better=False)
    assert fig.layout.yaxis.title.text == "perplexity, lower is better"
    assert "accuracy" not in fig.layout.title.text and "perplexity" in fig.layout.title.text
    assert "+25.0 %: worse" in fig.layout.title.subtitle.text
    better = charts.accuracy_chart({"accuracy": 20.0}, {"accuracy": 19.0}, "perplexity", percent=False,
                                   higher_is_better=False)
    assert "better" in better.layout.title.subtitle.text


def test_class_board_ranks_the_lowest_perplexity_first():
    _dashboard()
    from store.classroom import challenge_text, leaderboard, qualifies
    ch = {"kind": "max_size", "model": "tiny-lm", "metric": "perplexity", "percent": False,
          "higher_is_better": False, "limit": 500.0}
    subs = [{"browser": b, "display_name": b, "accuracy": ppl, "size_kb": kb, "created": i}
            for i, (b, ppl, kb) in enumerate([("a", 30.0, 400), ("b", 22.0, 450), ("c", 18.0, 900)])]
    board = leaderboard(ch, subs)
    assert [r["browser"] for r in board] == ["b", "a", "c"] and board[2]["rank"] is None  # c is over the size
    assert challenge_text(ch) == "lowest perplexity under 500 KB on tiny-lm"
    at_most = {**ch, "kind": "min_metric", "limit": 25.0}
    assert qualifies(at_most, 22.0, 900) and not qualifies(at_most, 30.0, 100)
    assert [r["browser"] for r in leaderboard(at_most, subs)][:2] == ["b", "c"]  # b is smaller; a is over 25


def test_experiments_change_is_positive_when_perplexity_falls():
    _dashboard()
    from state.session import experiments_frame
    row = {"ref": "lm", "model": "lm", "label": "x", "simulated": False, "metric": "perplexity",
           "higher_is_better": False, "percent": False, "size_bytes": 1000, "sparse_size_bytes": None,
           "theoretical_size_bytes": None, "smallest_bytes": 1000, "nonzero_params": 1, "params": 1, "latency": []}
    rows = [{**row, "id": 1, "baseline": True, "accuracy": 20.0}, {**row, "id": 2, "baseline": False, "accuracy": 22.0},
            {**row, "id": 3, "baseline": False, "accuracy": 19.0}]
    df = experiments_frame(rows)
    assert list(df["change_pt"]) == [0.0, -10.0, 5.0] and list(df["value"]) == [20.0, 22.0, 19.0]


def test_search_starts_on_the_lowest_perplexity_point():
    _dashboard()
    import ast
    src = (ROOT / "dashboard" / "pages" / "search.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "best_point")
    ns: dict = {}
    exec(compile(ast.Module([fn], []), "search.py", "exec"), ns)  # the page's own function, without running the page
    front = [{"accuracy": 30.0, "size_bytes": 10}, {"accuracy": 20.0, "size_bytes": 50}]
    assert ns["best_point"](front, higher_is_better=False) == 1 and ns["best_point"](front) == 0
