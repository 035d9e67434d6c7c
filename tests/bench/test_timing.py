"""The suite's one timer (`bench.timing`): stopping rules, the median's
interval, the device clocks and the L2 flush, with fakes standing in for the
device where a GPU would be needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench import backends, timing


class FakeClock:
    """Stands in for `time` inside bench.timing: work advances it exactly, so
    the tests check the timer's arithmetic, not this machine's load."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def work(self, seconds: float):
        def run():
            self.now += seconds
            return seconds

        return run


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)
    return fake


@pytest.mark.parametrize("n", [6, 7, 10, 25, 40, 101])
def test_median_interval_is_scipys_order_statistic_interval(n):
    values = np.random.default_rng(n).lognormal(0, 0.3, n)
    low, high = timing.median_interval(values)
    expected = stats.quantile_test(values, q=float(np.median(values)), p=0.5).confidence_interval(0.95)
    assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert low <= np.median(values) <= high


def test_median_interval_needs_six_values():
    assert all(math.isnan(v) for v in timing.median_interval([1.0, 1.1, 0.9, 1.0, 1.2]))
    assert not timing.precise_enough([1.0] * 5, 0.02)
    assert timing.precise_enough([1.0] * 6, 0.02)


def _constant_batch(value: float):
    return lambda rounds: [value] * rounds


def test_sample_stops_at_precision_after_min_rounds():
    series = timing.sample(_constant_batch(1e-3), timing.Settings(cap_s=10.0, min_rounds=8))
    assert series.stopped_by == "precision" and len(series.seconds) == 8
    assert series.median == 1e-3 and series.quartiles() == (1e-3, 1e-3)


def test_sample_stops_at_the_time_cap_when_noisy(clock):
    rng = np.random.default_rng(0)

    def noisy(rounds):
        clock.now += 1e-3 * rounds
        return list(rng.lognormal(0, 1.0, rounds))  # far too noisy for +-2%

    series = timing.sample(noisy, timing.Settings(cap_s=0.05, min_rounds=5))
    assert series.stopped_by == "time"
    assert 0.05 <= series.wall_s <= 0.05 + 1e-3 * 26  # batches never plan far past the cap


def test_sample_stops_at_max_rounds():
    rng = np.random.default_rng(1)
    series = timing.sample(lambda r: list(rng.lognormal(0, 1.0, r)),
                           timing.Settings(cap_s=10.0, min_rounds=5, max_rounds=12))
    assert series.stopped_by == "rounds" and len(series.seconds) == 12



def test_min_rounds_run_even_past_the_cap(clock):
    def slow(rounds):
        clock.now += 0.02 * rounds
        return [0.02] * rounds

    series = timing.sample(slow, timing.Settings(cap_s=0.001, min_rounds=4, precision=0))
    assert len(series.seconds) == 4 and series.stopped_by == "time"


class _FakeEvent:
    """An event on the fake clock: `record` stamps its time."""

    def __init__(self, clock, log):
        self.clock, self.log, self.t = clock, log, None

    def record(self):
        self.log.append("record")
        self.t = self.clock.now

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3  # milliseconds, as torch.cuda.Event


def test_event_timing_records_around_each_step_and_waits_once_per_batch(clock):
    log = []
    events = timing.EventTiming(new_event=lambda: _FakeEvent(clock, log), synchronize=lambda: log.append("sync"))
    flush_work, step_work = clock.work(2e-3), clock.work(1e-3)
    flush = timing.Flush(run=lambda: (log.append("flush"), flush_work()), nbytes=100, l2_bytes=50)
    seconds = events.batch(lambda: (log.append("step"), step_work()), rounds=3, flush=flush, estimate=1e-3)
    assert log == ["flush", "record", "step", "record"] * 3 + ["sync"]
    assert seconds == pytest.approx([1e-3] * 3)  # the flush is outside the events


def test_back_to_back_timing_subtracts_the_flush(clock):
    """A round of [flush, step] x n, minus n flushes measured alone, leaves the step."""
    back_to_back = timing.BackToBackTiming(sync=lambda out: None)
    flush = timing.Flush(run=clock.work(0.3e-3), nbytes=100, l2_bytes=50)
    assert back_to_back.steps_per_round(1e-3) == 5 and back_to_back.steps_per_round(1.0) == 1
    assert back_to_back.steps_per_round(1e-9) == timing.MAX_STEPS_PER_ROUND
    seconds = back_to_back.batch(clock.work(1e-3), rounds=5, flush=flush, estimate=1e-3)
    assert seconds == pytest.approx([1e-3] * 5)
    assert back_to_back.flush_time(flush, 5) == pytest.approx(0.3e-3)
    assert back_to_back.batch(clock.work(1e-3), rounds=5, flush=None, estimate=1e-3) == pytest.approx([1e-3] * 5)


def test_latency_rounds_flush_outside_the_clock(clock):
    calls = []
    flush_work, step_work = clock.work(3e-3), clock.work(0.5e-3)
    flush = timing.Flush(run=lambda: (calls.append("flush"), flush_work())[1], nbytes=10, l2_bytes=5)
    settings = timing.Settings(cap_s=0.2, min_rounds=6)
    timer = timing.Timer(sync=lambda out: calls.append("sync"), device=None, device_reason="none: test",
                         flush=flush, latency=settings, device_settings=settings)
    measured = timer.measure(lambda: (calls.append("step"), step_work())[1], estimate=0.5e-3)
    assert calls[:4] == ["flush", "sync", "step", "sync"]  # the flush is waited for before the clock starts
    assert measured.latency.median == pytest.approx(0.5e-3)  # not 3.5 ms
    assert measured.latency.stopped_by == "precision" and len(measured.latency.seconds) == 6
    fields = measured.fields()
    assert fields["l2"] == "cold" and fields["l2_flush_bytes"] == 10
    assert fields["device_median_s"] is None and fields["device_time_source"] == "none: test"


def test_alternating_takes_one_round_of_each_form_in_turn(clock):
    calls = []
    a_work, b_work = clock.work(1e-3), clock.work(3e-3)
    settings = timing.Settings(cap_s=1.0)
    timer = timing.Timer(sync=lambda out: calls.append("sync"), device=None, device_reason="none: test",
                         flush=None, latency=settings, device_settings=settings)
    runs = {"a": lambda: (calls.append("a"), a_work())[1], "b": lambda: (calls.append("b"), b_work())[1]}
    times = timer.alternating(runs, seconds=0.02)
    # Each turn of 4 ms: until 20 ms have passed, then no further turn.
    assert calls[:8] == ["a", "sync", "b", "sync"] * 2
    assert times["a"] == pytest.approx([1e-3] * 5) and times["b"] == pytest.approx([3e-3] * 5)
    # Past its time, still min_rounds of each.
    times = timer.alternating(runs, seconds=0.0, min_rounds=3)
    assert len(times["a"]) == len(times["b"]) == 3


def test_cpu_runner_has_no_device_clock_and_says_why():
    runner = backends.current()
    device, reason = runner.device_timing()
    assert device is None and reason.startswith("none: a CPU run")
    assert runner.l2_flush() is None and runner.l2_bytes() is None
    timer = timing.for_runner(runner, "warm", cap_s=0.05, min_rounds=3)
    measured = timer.measure(lambda: None, estimate=1e-6)
    fields = measured.fields()
    assert fields["device_median_s"] is None and fields["device_q1_s"] is None and fields["device_q3_s"] is None
    assert fields["device_time_source"] == reason and fields["l2"] == "warm"
    assert timer.latency.cap_s == 0.05  # no device series: the whole budget goes to the latency rounds


def test_timer_with_a_device_clock_fills_the_device_fields(clock):
    settings = timing.Settings(cap_s=0.1, min_rounds=6)
    timer = timing.Timer(sync=lambda out: None, device=timing.BackToBackTiming(sync=lambda out: None),
                         device_reason="", flush=None, latency=settings, device_settings=settings)
    fields = timer.measure(clock.work(0.2e-3), estimate=0.2e-3).fields()
    assert fields["device_q1_s"] <= fields["device_median_s"] <= fields["device_q3_s"]
    assert fields["device_rounds"] >= 6 and len(fields["device_rounds_s"]) == fields["device_rounds"]
    assert fields["device_steps_per_round"] == 25
    assert fields["device_time_source"].startswith("n steps issued back to back") and "L2 warm" in \
        fields["device_time_source"]


def test_flush_writes_at_least_twice_the_l2():
    assert timing.flush_bytes(50 * 2**20) == 100 * 2**20
    assert timing.flush_bytes(None) == timing.FALLBACK_FLUSH_BYTES >= 2 * 126 * 10**6
