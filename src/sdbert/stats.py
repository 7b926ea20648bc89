"""The statistics behind every accuracy and comparison we print.

One accuracy gets a Wilson score interval (well behaved near 0 and 1, unlike mean +- 1.96 SE).
Two systems scored on the same test reviews are compared paired: the exact McNemar test on the
reviews where they disagree, and a bootstrap interval of the accuracy difference that resamples
reviews, so both share each draw.
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `correct / total` (95% by default)."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total > 0, got {correct} of {total}")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: `only_a` reviews right by A alone, `only_b` by B alone.
    Under the null each disagreement is a fair coin, so this is a binomial test at 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def as_runs(correct) -> np.ndarray:
    """0/1 correctness as `(runs, reviews)` floats; one run may be given as a flat vector."""
    array = np.asarray(correct, dtype=np.float64)
    return array[None, :] if array.ndim == 1 else array


def paired_bootstrap(correct_a, correct_b, *, rounds: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(difference, low, high): accuracy of A minus B and its percentile bootstrap interval over
    test reviews. Each argument is `(reviews,)` or `(runs, reviews)`; runs (seeds) are averaged
    per review first, so the interval is over reviews, not over seeds."""
    a, b = as_runs(correct_a).mean(0), as_runs(correct_b).mean(0)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired scores need the same non-empty reviews, got {a.shape} and {b.shape}")
    per_review = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(rounds)
    for start in range(0, rounds, 500):  # in chunks: rounds x reviews indices at once can take gigabytes
        count = min(500, rounds - start)
        means[start:start + count] = per_review[rng.integers(0, per_review.size, size=(count, per_review.size))].mean(1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(per_review.mean()), float(low), float(high)


def disagreements(correct_a, correct_b) -> tuple[int, int]:
    """(reviews only A gets right, reviews only B gets right) for one pair of runs."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return int((a & ~b).sum()), int((~a & b).sum())
