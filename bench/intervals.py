"""How sure a median, a ratio or a change is: the suite's statistics, on
`scipy.stats` (no hand-written versions of what it does).

- `order_interval`: the distribution-free 95% interval of a median (order
  statistics with binomial ranks, as `scipy.stats.quantile_test`), cheap
  enough to decide after every batch of rounds whether to stop timing;
- `median_interval`: the bootstrap 95% interval of a median (`scipy.stats.bootstrap`,
  percentile method), the interval a row reports;
- `ratio_interval`: the bootstrap interval of the ratio of two medians from
  independent samples (involution over Conv2D, new over base);
- `rank_test`: the Brunner-Munzel test of two samples (no assumption of equal
  variances or shapes), for `reports compare`.

Resampling is seeded: the same rounds give the same interval.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
SEED = 20261124


def order_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median from order statistics; (nan,
    nan) with too few values for the confidence (fewer than 6 at 95%)."""
    from scipy.stats import binom

    n = len(values)
    k = int(binom.ppf((1 - confidence) / 2, n, 0.5)) if n else 0
    if k < 1:
        return math.nan, math.nan
    ordered = sorted(values)
    return float(ordered[k - 1]), float(ordered[n - k])


def _bootstrap(data: tuple, statistic, confidence: float) -> tuple[float, float]:
    from scipy import stats

    seed = {"rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state":
            np.random.default_rng(SEED)}
    result = stats.bootstrap(data, statistic, n_resamples=RESAMPLES, vectorized=True, axis=-1, paired=False,
                             confidence_level=confidence, method="percentile", **seed)
    low, high = result.confidence_interval
    return float(low), float(high)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of the median; (nan, nan) for fewer than 3 values."""
    values = np.asarray(values, dtype=float)
    if values.size < 3 or np.all(values == values[0]):
        return (math.nan, math.nan) if values.size < 3 else (float(values[0]), float(values[0]))
    return _bootstrap((values,), lambda x, axis: np.median(x, axis=axis), confidence)


def ratio_interval(numerator: Sequence[float], denominator: Sequence[float],
                   confidence: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of median(numerator) / median(denominator), the two
    samples independent; (nan, nan) when either has fewer than 3 values."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if a.size < 3 or b.size < 3 or np.median(b) <= 0:
        return math.nan, math.nan
    return _bootstrap((a, b), lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis), confidence)


def rank_test(new: Sequence[float], base: Sequence[float]) -> float:
    """Two-sided p-value of the Brunner-Munzel test that one sample tends to
    be larger than the other; nan when it cannot be computed."""
    from scipy import stats

    a, b = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # Fully separated samples leave the t distribution's degrees of freedom undefined (0/0): p is then 0.
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.brunnermunzel(a, b, alternative="two-sided", distribution="t").pvalue
    return float(p) if np.isfinite(p) else (0.0 if a.min() > b.max() or a.max() < b.min() else math.nan)
