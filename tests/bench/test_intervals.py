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


def test_process_noise_pools_the_spread_of_log_medians_per_series():
    groups = [("conv2d", [0.0, 0.2]), ("conv2d", [1.0, 1.1, 1.3]), ("conv2d", [5.0]),  # one process: no spread
              ("depthwise", [2.0, 2.0])]
    per_series, overall = intervals.process_noise(groups)
    # conv2d: variances 0.02 (1 degree of freedom) and 0.02333 (2), pooled by their degrees of freedom
    assert per_series["conv2d"].freedom == 3
    assert per_series["conv2d"].sigma == pytest.approx(math.sqrt((0.02 * 1 + np.var([1.0, 1.1, 1.3], ddof=1) * 2) / 3))
    assert per_series["depthwise"] == intervals.Noise(0.0, 1)
    assert overall.freedom == 4
    assert intervals.process_noise([("conv2d", [1.0])]) == ({}, None)


def test_log_interval_is_a_t_interval_on_the_log_scale():
    low, high = intervals.log_interval(2.0, 0.01, 5)
    half = stats.t.ppf(0.975, 5) * 0.1
    assert (low, high) == (pytest.approx(2.0 * math.exp(-half)), pytest.approx(2.0 * math.exp(half)))
    assert all(math.isnan(v) for v in intervals.log_interval(2.0, math.nan, 5))
    assert all(math.isnan(v) for v in intervals.log_interval(0.0, 0.01, 5))


def test_welch_freedom():
    assert intervals.welch_freedom((0.01, 0.01), (10, 10)) == pytest.approx(20)
    assert intervals.welch_freedom((0.01, 0.0), (10, 3)) == pytest.approx(10)  # one side exact
    assert intervals.welch_freedom((0.0, 0.0), (10, 3)) == math.inf


def test_between_process_intervals_cover_a_cases_true_time_about_95_percent_of_the_time():
    """Twelve cases of a series timed in two processes each, every process's
    median off the case's true time by a lognormal 8% (what back-to-back runs
    of this project's CPU machine show), and tight rounds within each: the
    interval the report gives case 0 (around the mean of its two medians,
    sigma pooled over the series) covers its true time as often as it says.
    The rounds of one process, bootstrapped, cover it about one time in
    eight."""
    rng = np.random.default_rng(8)
    truths = np.exp(rng.uniform(-7, -3, 12))  # seconds
    hits = hits_rounds = 0
    for _ in range(TRIALS):
        medians = truths[:, None] * rng.lognormal(0.0, 0.08, (12, 2))  # (case, process)
        per_series, _ = intervals.process_noise(("s", list(np.log(row))) for row in medians)
        noise = per_series["s"]
        low, high = intervals.log_interval(float(np.median(medians[0])), noise.sigma ** 2 / 2, noise.freedom)
        hits += low <= truths[0] <= high
        rounds = medians[0, 0] * rng.lognormal(0.0, 0.02, ROUNDS)  # one process's rounds, 2% spread
        low, high = intervals.median_interval(rounds)
        hits_rounds += low <= truths[0] <= high
    assert 0.90 <= hits / TRIALS <= 0.99
    assert hits_rounds / TRIALS < 0.3
