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
  variances or shapes), for `reports compare`;
- `process_noise` and `log_interval`: the variation between processes. The
  rounds of one process do not show how far its median lies from the next
  process's (docs/PERF.md: medians of one commit moved by 13%, median over the
  cases, in back-to-back runs whose own intervals were a few percent wide). Where
  cases were timed in several processes (a sweep's passes), the spread of the
  log medians between processes, pooled over the cases of a series, gives each
  median and ratio a t interval on the log scale that includes it.

Resampling is seeded: the same rounds give the same interval.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Noise:
    """The spread between processes of the same code: the standard deviation
    of log medians (`sigma`; 0.05 is about 5%) and its degrees of freedom."""

    sigma: float
    freedom: int


def process_noise(groups: Iterable[tuple[Hashable, Sequence[float]]]) -> tuple[dict[Hashable, Noise], Noise | None]:
    """Noise per key (a series) and over every key, pooled from each case
    that has two or more process medians: `groups` holds (key, that case's
    log medians). A key without such a case is absent; None overall when no
    case has two."""
    parts: dict[Hashable, list[tuple[float, int]]] = {}
    for key, logs in groups:
        if len(logs) >= 2:
            parts.setdefault(key, []).append((float(np.var(logs, ddof=1)), len(logs) - 1))

    def pooled(items: list[tuple[float, int]]) -> Noise | None:
        freedom = sum(f for _, f in items)
        return Noise(math.sqrt(sum(v * f for v, f in items) / freedom), freedom) if freedom else None

    per_key = {key: pooled(items) for key, items in parts.items()}
    return per_key, pooled([item for items in parts.values() for item in items])


def log_interval(point: float, variance: float, freedom: float, confidence: float = 0.95) -> tuple[float, float]:
    """The t interval point * exp(-+ t * sqrt(variance)) of a positive
    quantity whose log has `variance` with `freedom` degrees of freedom;
    (nan, nan) when any is missing."""
    from scipy.stats import t

    if not (point > 0 and variance >= 0 and freedom > 0):
        return math.nan, math.nan
    half = float(t.ppf((1 + confidence) / 2, freedom)) * math.sqrt(variance)
    return point * math.exp(-half), point * math.exp(half)


def welch_freedom(variances: Sequence[float], freedoms: Sequence[float]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent
    variance estimates (of a ratio's two log medians)."""
    denominator = sum(v * v / f for v, f in zip(variances, freedoms, strict=True) if f > 0)
    return sum(variances) ** 2 / denominator if denominator > 0 else math.inf
