"""The statistics of the Table 1 report against hand-computed values and scipy."""

import math

import numpy as np
import pytest

from sdbert.stats import disagreements, mcnemar_exact, paired_bootstrap, wilson_interval


def test_wilson_interval_matches_the_formula_worked_by_hand():
    # 80 of 100, z = 1.96: centre (0.8 + 0.019208) / 1.038416, half-width 1.96 * sqrt(0.0016 + 0.00009604) / 1.038416
    low, high = wilson_interval(80, 100)
    centre, half = 0.819208 / 1.038416, 1.959964 * math.sqrt(0.0016 + 0.0000960) / 1.038416
    assert low == pytest.approx(centre - half, abs=1e-4) and high == pytest.approx(centre + half, abs=1e-4)
    assert (round(low, 4), round(high, 4)) == (0.7112, 0.8666)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0) and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 0)


def test_wilson_interval_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    for correct, total in ((835, 1000), (4470, 5000), (3, 7)):
        ci = stats.binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(correct, total) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_mcnemar_exact_worked_example_and_scipy():
    # 1 vs 9 disagreements: 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * (1 + 10) / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    stats = pytest.importorskip("scipy.stats")
    for a, b in ((12, 30), (140, 171), (3, 0)):
        assert mcnemar_exact(a, b) == pytest.approx(stats.binomtest(a, a + b, 0.5).pvalue, rel=1e-9)


def test_disagreements_counts_each_side():
    assert disagreements([1, 1, 0, 0, 1], [1, 0, 1, 0, 0]) == (2, 1)


def test_bootstrap_interval_contains_the_true_difference():
    rng = np.random.default_rng(1)
    n = 4000
    a = rng.random(n) < 0.85  # A right on about 85% of reviews, B on about 80%, independently
    b = rng.random(n) < 0.80
    difference, low, high = paired_bootstrap(a, b, rounds=4000)
    assert difference == pytest.approx(a.mean() - b.mean())
    assert low < 0.05 < high and low > 0, (low, high)
    same, low0, high0 = paired_bootstrap(a, a)
    assert (same, low0, high0) == (0.0, 0.0, 0.0)


def test_bootstrap_averages_seeds_per_review():
    runs_a = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])  # seed means per review: 1, .5, 0, 0
    runs_b = np.array([[0, 0, 0, 0], [0, 0, 0, 0]])
    difference, _, _ = paired_bootstrap(runs_a, runs_b, rounds=100)
    assert difference == pytest.approx(1.5 / 4)
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1, 0, 1])
