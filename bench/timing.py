"""The suite's one timer: warm-up, timed rounds, device time, the L2 flush.

Every time the suite reports comes from `Timer.measure` (the sweep and
`python -m bench.targets` alike):

- **latency** rounds: one step per round, timed on the host with the wait for
  the device inside the round: what a caller of the layer waits for, host
  dispatch and kernel launches included.
- **device** rounds (GPUs): the device's own time per step, by the method the
  backend allows (`EventTiming`: CUDA events recorded around each step on its
  stream, PyTorch; `BackToBackTiming`: n steps issued back to back and the
  round divided by n, JAX and TensorFlow, whose APIs have no device events).
  On a CPU there is none, and the row says why.
- **L2** ("cold"): before each timed step a buffer of at least twice the GPU's
  L2 is written (`Flush`), outside the timed interval: host-timed rounds wait
  for the flush before their clock starts; CUDA events are recorded after it;
  back-to-back rounds issue [flush, step] n times and subtract the flush's own
  time, measured the same way. "warm": repeated steps find their data in L2.
- **Rounds** are chosen from the noise: a series runs in batches until its
  median's 95% confidence interval (order statistics, `scipy.stats.quantile_test`)
  is within +-`precision` of it, or its time cap is spent, or `max_rounds`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench import intervals

DEFAULT_PRECISION = 0.02  # stop when the median's 95% interval is within +-2%
# Flushed bytes when the L2 size is unknown: twice the largest L2 of current
# NVIDIA data-centre GPUs (B200: 126 MB) fits in it.
FALLBACK_FLUSH_BYTES = 256 * 2**20
BACK_TO_BACK_ROUND_S = 5e-3  # device work per back-to-back round: a fixed cost of ~30 us stays under 1%
MAX_STEPS_PER_ROUND = 200
L2_MODES = ("cold", "warm")


@dataclass(frozen=True)
class Warmup:
    compile_seconds: float  # first call minus a warm call
    estimate: float  # seconds of one warm round
    calls: int


def warm_up(round_fn: Callable[[], None], min_calls: int = 3, min_seconds: float = 0.05,
            max_seconds: float = 30.0) -> Warmup:
    """Run `round_fn` until compilation, autotuning and caches are done."""
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


def harness_overhead(sync: Callable[[object], None], repeats: int = 2000) -> float:
    """Median seconds of a latency round whose step does nothing: what the
    timer (the round function, the device wait, the clock) adds to every round."""
    def nothing():
        return None

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(nothing())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- statistics of one series --------------------------------------------------
median_interval = intervals.order_interval  # the stopping rule's interval (cheap: checked every batch)


def precise_enough(values: Sequence[float], precision: float) -> bool:
    """Whether the median's 95% interval lies within +-precision of it."""
    low, high = median_interval(values)
    if not (math.isfinite(low) and math.isfinite(high)):
        return False
    median = statistics.median(values)
    return median > 0 and max(median - low, high - median) <= precision * median


@dataclass(frozen=True)
class Settings:
    """How long a timed series runs.

    Attributes:
        cap_s: seconds of rounds a series may take at most (its budget).
        min_rounds: rounds before any stopping rule applies.
        max_rounds: rounds at most.
        precision: stop once the median's 95% interval is within +-precision
            of the median (0 disables the rule: rounds fill the cap).
    """

    cap_s: float
    min_rounds: int = 5
    max_rounds: int = 10_000
    precision: float = DEFAULT_PRECISION


@dataclass(frozen=True)
class Series:
    """Seconds per step of each round of one timed series, and why it stopped
    ("precision", "time" or "rounds")."""

    seconds: tuple[float, ...]
    stopped_by: str
    wall_s: float  # seconds the series took, flushes and waits included

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def quartiles(self) -> tuple[float, float]:
        if len(self.seconds) < 2:
            return self.seconds[0], self.seconds[0]
        q1, _, q3 = statistics.quantiles(self.seconds, n=4, method="inclusive")
        return q1, q3

    def interval(self) -> tuple[float, float]:
        """The bootstrap 95% interval of the median (what rows report)."""
        return intervals.median_interval(self.seconds)


def sample(batch: Callable[[int], list[float]], settings: Settings) -> Series:
    """Run `batch(m)` (m rounds, their seconds per step) until a stopping rule
    holds; each batch grows the series by half (a few checks of the interval)
    and never plans past the cap."""
    seconds: list[float] = []
    start = time.perf_counter()
    size = max(settings.min_rounds, 1)
    while True:
        seconds += batch(size)
        elapsed = time.perf_counter() - start
        if len(seconds) >= settings.max_rounds:
            stopped = "rounds"
            break
        if settings.precision > 0 and len(seconds) >= settings.min_rounds and precise_enough(
                seconds, settings.precision):
            stopped = "precision"
            break
        if elapsed >= settings.cap_s and len(seconds) >= settings.min_rounds:
            stopped = "time"
            break
        per_round = elapsed / len(seconds)
        left = max(int((settings.cap_s - elapsed) / max(per_round, 1e-9)), 1)
        size = max(1, min(max(len(seconds) // 2, settings.min_rounds), left, settings.max_rounds - len(seconds)))
    return Series(tuple(seconds), stopped, time.perf_counter() - start)


# -- the L2 flush and the device clocks -------------------------------------------
@dataclass(frozen=True)
class Flush:
    """Writes `nbytes` on the device (asynchronously): run before a timed
    step, it leaves none of the step's data in the L2 cache."""

    run: Callable[[], Any]
    nbytes: int
    l2_bytes: int | None  # the cache it flushes, when known


def flush_bytes(l2_bytes: int | None) -> int:
    """At least twice the L2 (Triton's do_bench and nvbench write more than
    the cache holds); the fallback when its size is unknown."""
    return 2 * l2_bytes if l2_bytes else FALLBACK_FLUSH_BYTES


class DeviceTiming(Protocol):
    """A backend's way to time steps on the device."""

    source: str  # the method, for the row's device_time_source

    def batch(self, run: Callable[[], Any], rounds: int, flush: Flush | None, estimate: float) -> list[float]:
        """`rounds` rounds of `run`; the device seconds per step of each."""
        ...


@dataclass
class EventTiming:
    """Device events around each step (PyTorch: `torch.cuda.Event`).

    A batch records [flush, start, step, end] per round without waiting in
    between (the host runs ahead when the device is the bottleneck, as in
    Triton's do_bench), then waits for the device once and reads every pair:
    the elapsed time between two events is measured on the device's clock."""

    new_event: Callable[[], Any]  # an event with timing enabled
    synchronize: Callable[[], None]
    source: str = "CUDA events around each step (torch.cuda.Event elapsed_time)"

    def batch(self, run, rounds, flush, estimate):
        pairs = [(self.new_event(), self.new_event()) for _ in range(rounds)]
        for start, end in pairs:
            if flush is not None:
                flush.run()
            start.record()
            run()
            end.record()
        self.synchronize()
        return [start.elapsed_time(end) * 1e-3 for start, end in pairs]  # ms -> s


@dataclass
class BackToBackTiming:
    """n steps issued back to back per round, one wait, the round divided by n.

    For backends without device events (JAX, TensorFlow): when the device is
    the bottleneck the host's dispatch of each step overlaps the device's work
    on the previous one, so the round measures the device. n makes a round
    about 5 ms of device work (the wait's fixed cost stays under 1%). With a
    cold L2 each step is preceded by a flush, and the flush's own time per
    step, measured by rounds of n flushes, is subtracted."""

    sync: Callable[[Any], None]
    source: str = "n steps issued back to back per round, round time / n"
    flush_seconds: dict = field(default_factory=dict)  # flush's own time per step, per round length

    def steps_per_round(self, estimate: float) -> int:
        return int(min(max(math.ceil(BACK_TO_BACK_ROUND_S / max(estimate, 1e-7)), 1), MAX_STEPS_PER_ROUND))

    def _round(self, run, n: int, flush: Flush | None) -> float:
        start = time.perf_counter()
        out = None
        for _ in range(n):
            if flush is not None:
                flush.run()
            out = run()
        self.sync(out)  # steps of one device stream finish in order: the last one ends the round
        return time.perf_counter() - start

    def flush_time(self, flush: Flush, n: int) -> float:
        """Median seconds per flush in rounds of n flushes back to back."""
        if n not in self.flush_seconds:
            runs = []
            for _ in range(7):
                start = time.perf_counter()
                out = None
                for _ in range(n):
                    out = flush.run()
                self.sync(out)
                runs.append((time.perf_counter() - start) / n)
            self.flush_seconds[n] = statistics.median(runs[2:])  # the first rounds warm the flush up
        return self.flush_seconds[n]

    def batch(self, run, rounds, flush, estimate):
        n = self.steps_per_round(estimate)
        minus = self.flush_time(flush, n) if flush is not None else 0.0
        return [max(self._round(run, n, flush) / n - minus, 0.0) for _ in range(rounds)]


# -- one case -----------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    latency: Series
    device: Series | None
    device_source: str  # the method, or why there is no device time
    l2: str  # "cold" or "warm"
    flush_bytes: int | None
    flush_seconds: float | None  # the flush's own time per step (back-to-back rounds)
    steps_per_round: int | None

    def fields(self) -> dict:
        """The row fields of the device series (None where not measured)."""
        fields: dict = {"device_time_source": self.device_source, "l2": self.l2, "l2_flush_bytes": self.flush_bytes,
                        "l2_flush_s": self.flush_seconds, "device_steps_per_round": self.steps_per_round,
                        "device_median_s": None, "device_q1_s": None, "device_q3_s": None, "device_rounds": None,
                        "device_stopped_by": None, "device_rounds_s": None, "device_median_ci_low_s": None,
                        "device_median_ci_high_s": None}
        if self.device is not None:
            q1, q3 = self.device.quartiles()
            low, high = self.device.interval()
            fields.update(device_median_s=self.device.median, device_q1_s=q1, device_q3_s=q3,
                          device_median_ci_low_s=low, device_median_ci_high_s=high,
                          device_rounds=len(self.device.seconds), device_stopped_by=self.device.stopped_by,
                          device_rounds_s=list(self.device.seconds))
        return fields


@dataclass
class Timer:
    """Times prepared steps the same way for every case of a run.

    Attributes:
        sync: the backend's wait for a step's outputs.
        device: the device clock, or None (then `device_reason` says why).
        flush: the L2 flush, or None for a warm L2.
        latency: settings of the latency series.
        device_settings: settings of the device series.
    """

    sync: Callable[[Any], None]
    device: DeviceTiming | None
    device_reason: str
    flush: Flush | None
    latency: Settings
    device_settings: Settings

    @property
    def l2(self) -> str:
        return "cold" if self.flush is not None else "warm"

    def latency_rounds(self, run) -> Callable[[int], list[float]]:
        """batch(m): m rounds of one step each, host-timed, the wait for the
        device inside each round (and, cold, the flush waited for before it)."""
        flush, sync = self.flush, self.sync

        def batch(rounds: int) -> list[float]:
            seconds = []
            for _ in range(rounds):
                if flush is not None:
                    sync(flush.run())  # written before the clock starts
                start = time.perf_counter()
                sync(run())
                seconds.append(time.perf_counter() - start)
            return seconds

        return batch

    def alternating(self, runs: dict[str, Callable[[], Any]], seconds: float,
                    min_rounds: int = 5) -> dict[str, list[float]]:
        """Seconds per step of each of `runs`, in latency rounds taken in
        turn, one round of each, for `seconds` and until each has
        `min_rounds`: an A/B comparison within one process, where a drift of
        the machine's speed (between processes, up to 2x on a shared CPU)
        falls on every form alike. The forms are warmed up by the caller."""
        batches = {name: self.latency_rounds(run) for name, run in runs.items()}
        times: dict[str, list[float]] = {name: [] for name in runs}
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or min(map(len, times.values())) < min_rounds:
            for name, batch in batches.items():
                times[name] += batch(1)
        return times

    def measure(self, run: Callable[[], Any], estimate: float) -> Measurement:
        """Latency rounds, then device rounds; `estimate` is a warm round's
        seconds (from `warm_up`)."""
        latency = sample(self.latency_rounds(run), self.latency)
        device, steps, flush_s = None, None, None
        if self.device is not None:
            device_timing = self.device
            device = sample(lambda rounds: device_timing.batch(run, rounds, self.flush, estimate),
                            self.device_settings)
            if isinstance(device_timing, BackToBackTiming):
                steps = device_timing.steps_per_round(estimate)
                if self.flush is not None:
                    flush_s = device_timing.flush_time(self.flush, steps)
        return Measurement(latency=latency, device=device, device_source=self.source(), l2=self.l2,
                           flush_bytes=self.flush.nbytes if self.flush is not None else None,
                           flush_seconds=flush_s, steps_per_round=steps)

    def source(self) -> str:
        if self.device is None:
            return self.device_reason
        if self.flush is None:
            return f"{self.device.source}; L2 warm"
        how = ("flush time subtracted" if isinstance(self.device, BackToBackTiming)
               else "outside the events")
        return f"{self.device.source}; L2 cold: {self.flush.nbytes / 2**20:.0f} MiB written before each step ({how})"


def for_runner(runner, l2: str, cap_s: float, min_rounds: int = 5, max_rounds: int = 10_000,
               precision: float = DEFAULT_PRECISION) -> Timer:
    """The timer of a backend runner (`bench.backends`): its device clock,
    its L2 flush when `l2` is "cold", and a case's budget `cap_s` split over
    the series: with a device clock 40% for the latency rounds and 60% for
    the device rounds (the figure GPU comparisons use), else all for latency."""
    device, reason = runner.device_timing()
    share = (0.4, 0.6) if device is not None else (1.0, 0.0)
    settings = dict(min_rounds=min_rounds, max_rounds=max_rounds, precision=precision)
    return Timer(sync=runner.sync_function(), device=device, device_reason=reason,
                 flush=runner.l2_flush() if l2 == "cold" else None,
                 latency=Settings(cap_s=share[0] * cap_s, **settings),
                 device_settings=Settings(cap_s=share[1] * cap_s, **settings))
