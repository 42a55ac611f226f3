"""benchmarks.band_fit's band arithmetic on made-up rows (the benchmark itself measures a model: minutes)."""

from benchmarks.band_fit import _judge, fitted, in_sample


def rows(errors_by_change):
    """Rows as ``estimate_quality`` gives them, the baseline 0.9 (estimate = baseline + change)."""
    return [{"estimate": 0.9 + c, "measured": 0.9 + c + e, "change": c} for c, e in errors_by_change]


def test_in_sample_band_holds_80_percent_and_is_the_narrowest_of_its_shape():
    # errors growing with the square of the change: a square band is narrower than a straight one
    data = rows([(-0.01 * i, 0.002 * i * i * 0.01) for i in range(1, 21)])
    square, straight = in_sample(data, 2.0), in_sample(data, 1.0)
    assert square["inside"] >= 0.8 and straight["inside"] >= 0.8
    assert square["median_band"] < straight["median_band"]
    # nothing narrower of the same shape holds 80 %: shrink it and fewer are inside
    inside, _, _ = _judge(data, square["c"] * 0.9, square["k"] * 0.9, 2.0)
    assert inside < 0.8


def test_fitted_on_the_judged_rows_themselves_holds_them():
    data = rows([(-0.01 * i, (-1) ** i * 0.001 * i) for i in range(1, 25)])
    f = fitted(data, data, 1.0, len(data), draws=1)
    assert f["draws"] == 1 and f["inside"] >= 0.75
    assert f["median_abs_error"] > 0
