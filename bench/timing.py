"""Warm-up, round planning and the harness's own cost.

The timed function of every round is `Step.round`: one step and the wait for
the device. Warm-up runs it until compilation, autotuning and caches are
done; the first call's extra time is recorded as `compile_seconds`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Warmup:
    compile_seconds: float  # first call minus a warm call
    estimate: float  # seconds of one warm round
    calls: int


def warm_up(round_fn: Callable[[], None], min_calls: int = 3, min_seconds: float = 0.05,
            max_seconds: float = 30.0) -> Warmup:
    start = time.perf_counter()
    round_fn()
    first = time.perf_counter() - start
    times: list[float] = []
    while len(times) < min_calls - 1 or (sum(times) < min_seconds and len(times) < 100):
        start = time.perf_counter()
        round_fn()
        times.append(time.perf_counter() - start)
        if sum(times) > max_seconds:
            break
    # The last warm call: earlier ones may still be autotuning or filling caches.
    estimate = min(statistics.median(times), times[-1])
    return Warmup(compile_seconds=max(first - estimate, 0.0), estimate=estimate, calls=1 + len(times))


def plan_rounds(estimate: float, time_per_case: float, min_rounds: int, max_rounds: int) -> int:
    """Rounds that fill about `time_per_case` seconds."""
    rounds = math.ceil(time_per_case / max(estimate, 1e-7))
    return int(min(max(rounds, min_rounds), max_rounds))


def harness_overhead(sync: Callable[[object], None], repeats: int = 2000) -> float:
    """Median seconds of a round whose step does nothing: what the harness
    (the round function, the device wait, the timer) adds to every round."""
    def nothing():
        return None

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(nothing())
        times.append(time.perf_counter() - start)
    return statistics.median(times)
