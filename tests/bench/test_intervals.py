"""The suite's statistics (`bench.intervals`): that each interval covers
what it claims to about as often as it claims, that the rank test keeps its
false-positive rate, and the edge cases a sweep meets (too few rounds, equal
rounds). Every sample is drawn from a seeded generator, so each test sees the
same numbers every run; the bounds allow for the known small-sample
behaviour of percentile bootstrap intervals, not for luck."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench import intervals
from tests import backend as tb

pytestmark = tb.BACKEND_INDEPENDENT

TRIALS = 300  # simulated runs per property; with seeded data, one run's check is the next run's check
ROUNDS = 25  # rounds of a typical case (a sweep stops between 6 and a few hundred)


def _rounds(rng: np.random.Generator, median: float, size: int = ROUNDS) -> np.ndarray:
    """Timed rounds: right-skewed around `median` as step times are (lognormal, 20% spread)."""
    return median * rng.lognormal(0.0, 0.2, size)


def _coverage(make_interval, truth: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(TRIALS):
        low, high = make_interval(rng)
        hits += low <= truth <= high
    return hits / TRIALS


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time():
    coverage = _coverage(lambda rng: intervals.median_interval(_rounds(rng, 2e-3)), 2e-3, seed=1)
    # Percentile intervals of a median from 25 values cover a little under their level (the
    # bootstrap distribution of a median is discrete); an 80% interval covers 75% of these runs, a
    # 99.9% one all of them.
    assert 0.87 <= coverage <= 0.995


def test_ratio_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    # involution's rounds against Conv2D's: true ratio of the medians 1.5
    coverage = _coverage(lambda rng: intervals.ratio_interval(_rounds(rng, 3e-3), _rounds(rng, 2e-3)), 1.5, seed=2)
    assert 0.87 <= coverage <= 0.995


def test_intervals_are_narrower_with_more_rounds():
    rng = np.random.default_rng(3)
    widths = []
    for size in (10, 40, 160):
        low, high = intervals.ratio_interval(_rounds(rng, 3e-3, size), _rounds(rng, 2e-3, size))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_the_same_rounds_give_the_same_interval():
    values = _rounds(np.random.default_rng(4), 1e-3)
    other = _rounds(np.random.default_rng(5), 2e-3)
    assert intervals.median_interval(values) == intervals.median_interval(values.copy())
    assert intervals.ratio_interval(values, other) == intervals.ratio_interval(list(values), list(other))


def test_median_interval_holds_the_median_within_the_sample():
    values = _rounds(np.random.default_rng(6), 1e-3)
    low, high = intervals.median_interval(values)
    assert values.min() <= low <= np.median(values) <= high <= values.max()


def test_too_few_or_unusable_rounds_give_no_interval():
    assert all(math.isnan(v) for v in intervals.median_interval([1.0, 2.0]))
    assert all(math.isnan(v) for v in intervals.ratio_interval([1.0, 2.0], [1.0, 2.0, 3.0]))
    assert all(math.isnan(v) for v in intervals.ratio_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]))
    assert intervals.median_interval([2.5] * 4) == (2.5, 2.5)  # equal rounds: the median, exactly


@pytest.mark.parametrize("size", [3, 8, 30])
def test_rank_test_is_scipys_brunner_munzel(size):
    rng = np.random.default_rng(size)
    a, b = _rounds(rng, 1.0, size), _rounds(rng, 1.1, size)
    expected = stats.brunnermunzel(a, b, alternative="two-sided", distribution="t").pvalue
    assert intervals.rank_test(a, b) == pytest.approx(expected)


def test_rank_test_keeps_its_false_positive_rate_and_finds_a_real_change():
    rng = np.random.default_rng(7)
    same = [intervals.rank_test(_rounds(rng, 1.0, 20), _rounds(rng, 1.0, 20)) for _ in range(TRIALS)]
    slower = [intervals.rank_test(_rounds(rng, 1.2, 20), _rounds(rng, 1.0, 20)) for _ in range(TRIALS)]
    assert np.mean(np.array(same) < 0.05) <= 0.10  # 5% expected
    assert np.mean(np.array(slower) < 0.05) >= 0.80  # a 20% change with 20% spread, 20 rounds each


def test_rank_test_edge_cases():
    assert intervals.rank_test([1.0, 2.0, 3.0], [5.0, 6.0, 7.0]) == 0.0  # fully separated
    assert intervals.rank_test([1.0, 1.0, 1.0], [1.0, 1.0]) == 1.0  # nothing differs
    assert math.isnan(intervals.rank_test([1.0], [1.0, 2.0]))  # one round says nothing of its spread
