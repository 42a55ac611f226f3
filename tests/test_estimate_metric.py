"""The metric estimated from per-layer sensitivity curves: exact at the curves' own points, monotone, lower-is-better
metrics combined as ratios, steps it cannot read named, and its quality measured on random configurations."""

from __future__ import annotations

import pytest
import torch

import sample_models
from compression_core import estimate_metric, estimate_quality, metric_curves
from compression_core.estimate_metric import MetricCurves, random_configs
from compression_core.sensitivity import LayerCurve


@pytest.fixture(scope="module")
def mlp():
    return sample_models.load("digits-mlp")


@pytest.fixture(scope="module")
def curves(mlp):
    return metric_curves(mlp.model, mlp, families=("prune", "quantize"),
                         levels={"prune": (0.3, 0.5, 0.7, 0.9), "quantize": (8, 4, 2)}, check=0)


def test_no_steps_is_the_baseline_and_one_layer_at_a_level_is_its_curve(mlp, curves):
    base = mlp.score(mlp.model, "test")
    assert estimate_metric(curves, mlp.model, [], mlp).value == pytest.approx(base)
    fc1 = next(c for c in curves.curves["prune"] if c.name == "fc1")
    level, m = fc1.points[1]  # 0.5 sparsity, measured on the calibration split
    est = estimate_metric(curves, mlp.model, [{"kind": "prune_unstructured", "amount": level, "targets": ["fc1"]}], mlp)
    assert est.value == pytest.approx(base + (m - curves.baseline), abs=1e-3)  # bias counted: weights only
    assert set(est.layers) == {"fc1"}


@pytest.mark.slow
def test_more_compression_never_estimates_better(mlp, curves):
    vals = [estimate_metric(curves, mlp.model, [{"kind": "prune_unstructured", "amount": a}], mlp).value
            for a in (0.0, 0.3, 0.6, 0.9)]
    assert vals == sorted(vals, reverse=True) and vals[-1] < vals[0]
    bits = [estimate_metric(curves, mlp.model, [{"kind": "fake_quant", "bits": b}], mlp).value for b in (8, 4, 2)]
    assert bits[0] >= bits[-1]


@pytest.mark.slow
def test_steps_it_cannot_read_are_named(mlp, curves):
    est = estimate_metric(curves, mlp.model, [{"kind": "finetune", "epochs": 1}], mlp)
    assert est.value is None and "finetune" in est.reason


def test_lower_is_better_metric_combines_as_ratios(mlp):
    """A perplexity-like metric: each layer's change is a ratio; the estimate rises when layers are compressed."""
    fake = MetricCurves(model="m", split="calib", samples=10, metric="perplexity", higher_is_better=False,
                        percent=False, baseline=10.0,
                        curves={"prune": [LayerCurve(name=n, type="Linear", params=p, points=[(0.5, 12.0), (0.9, 20.0)])
                                          for n, p in (("fc1", 64 * 128), ("fc2", 128 * 64))]})
    est = estimate_metric(fake, mlp.model, [{"kind": "prune_unstructured", "amount": 0.5, "targets": ["fc1", "fc2"]}],
                          mlp, baseline=20.0)
    assert est.value == pytest.approx(20.0 * 1.2 * 1.2, rel=0.01)  # two layers, each x1.2


def test_random_configs_mix_families_over_several_layers(mlp):
    configs = random_configs(mlp.model, mlp, 30, seed=3)
    kinds = {len(c) for c in configs}
    assert max(kinds) >= 2 and min(kinds) >= 1
    assert all(len(s["targets"]) >= 1 for c in configs for s in c)
    assert configs == random_configs(mlp.model, mlp, 30, seed=3)  # seeded


@pytest.mark.slow
def test_estimate_quality_reports_error_and_band(mlp, curves):
    banded = curves.model_copy(update={"band": 0.05})
    q = estimate_quality(mlp, n=6, seed=1, curves=banded)
    assert q["n"] >= 1 and q["median_abs_error"] >= 0 and 0 <= q["inside_band"] <= 1 and q["band"] == 0.05
    assert {"estimate", "measured", "steps"} <= set(q["rows"][0])


@pytest.mark.slow
def test_advise_sizes_are_the_computed_ones_and_equal_the_measured_file():
    """Advise's size figures come from estimate_cost (Explore's too), and equal the saved file's bytes."""
    from compression_core import estimate_cost, quantize, size_bytes
    from compression_core.advise import _config, advise

    wl = sample_models.load("digits-mlp")
    a = advise(wl, min_run_time=0.01)
    assert a.baseline.size_bytes == estimate_cost(wl.model, [], wl).size_bytes == size_bytes(wl.model)
    for c in a.candidates:
        cfg = _config(c.method, 2)
        assert c.size_bytes == estimate_cost(wl.model, [cfg], wl).size_bytes == size_bytes(quantize(wl.model, cfg, wl))


def test_curves_computed_in_parts_merge_to_the_whole(mlp):
    """A big model's curves come from several jobs, each a part of the layers: merged, they are the whole sweep."""
    from compression_core.estimate_metric import merge_curves

    kw = dict(families=("prune",), levels={"prune": (0.5, 0.9)}, check=0)
    whole = metric_curves(mlp.model, mlp, **kw)
    parts = merge_curves([metric_curves(mlp.model, mlp, targets=["fc1"], **kw),
                          metric_curves(mlp.model, mlp, targets=["fc2", "fc3"], **kw)])
    assert [c.model_dump() for c in parts.curves["prune"]] == [c.model_dump() for c in whole.curves["prune"]]


@pytest.mark.slow
def test_quality_runs_on_an_in_memory_workload_that_is_not_registered():
    """A model brought as a Workload object (no registered name, no reference) is measured too: the random
    configurations are applied to the given workload (the recipe's model name is never resolved)."""
    import sample_models
    from compression_core import estimate_quality
    from compression_core.workload import _with

    wl = _with(sample_models.load("digits-mlp"), name="my-own-mlp", reference=None)
    q = estimate_quality(wl, n=6, check=6)
    assert q["model"] == "my-own-mlp" and q["n"] >= 4  # configurations were applied and measured
    assert q["median_band"] is not None and 0 <= q["inside_band"] <= 1


# ------------------------------------------------------------------------------------------ the fitted scale
def _row(base: float, change: float, measured_change: float) -> dict:
    return {"estimate": base + change, "measured": base + measured_change, "change": change}


def test_fit_scale_recovers_a_known_factor_and_stays_in_range():
    from compression_core.estimate_metric import SCALE_RANGE, fit_scale

    rows = [_row(0.8, c, 0.7 * c) for c in (-0.01, -0.05, -0.2, -0.4)]
    assert fit_scale(rows) == pytest.approx(0.7)
    assert fit_scale([_row(0.8, 0.0, -0.1)]) == 1.0  # nothing estimated to change: nothing to fit
    assert fit_scale([_row(0.8, -0.01, -0.5)]) == SCALE_RANGE[1] == 1.0  # clamped: the sum is never enlarged
    assert fit_scale([_row(0.8, -0.5, -0.01)]) == SCALE_RANGE[0]
    ppl = [{"estimate": 10 * r, "measured": 10 * r ** 0.5, "change": 10 * r - 10} for r in (1.2, 2.0, 3.0)]
    assert fit_scale(ppl, ratio=True) == pytest.approx(0.5)  # a ratio metric: fitted in the log


def test_the_estimate_applies_the_scale_to_the_summed_change(mlp, curves):
    steps = [{"kind": "prune_unstructured", "amount": 0.7, "targets": ["fc1", "fc2"]}]
    plain = estimate_metric(curves, mlp.model, steps, mlp)
    half = estimate_metric(curves.model_copy(update={"scale": 0.5}), mlp.model, steps, mlp)
    assert plain.change < 0 and half.change == pytest.approx(0.5 * plain.change)
    assert half.band is None  # no band measured yet


def test_measured_band_fits_a_scale_and_states_errors_left_out_of_its_fit(mlp, curves):
    """measure_band fits the scale on its configurations and measures the band on each one's error with the scale
    fitted on the others: a scale from the same rows would make the band look tighter than it is."""
    from compression_core.estimate_metric import SCALE_RANGE, measure_band

    banded = measure_band(mlp.model, mlp, curves, n=8, seed=2)
    assert SCALE_RANGE[0] <= banded.scale <= SCALE_RANGE[1] and banded.band is not None
    assert banded.band_checks >= 6 and 0 <= banded.band_share <= 1 and banded.median_abs_error >= 0
