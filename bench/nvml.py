"""GPU conditions during a case's timed rounds, read through NVML (nvidia-ml-py).

A throttled GPU makes a case look slow: `Watch` samples the SM and memory
clocks, temperature, power and the clock-event (throttle) reasons every
`INTERVAL_S` in a background thread while the rounds run (NVML calls release
the GIL), and reads NVML's violation counters (nanoseconds spent held back by
power, thermal or reliability limits) before and after. A reason seen in any
sample, or a violation counter that moved, marks the case `throttled`.

Without NVML (no NVIDIA driver, no `pynvml`, a CPU run) every field is None
and `gpu_conditions_source` says why.
"""

from __future__ import annotations

import os
import statistics
import threading
from dataclasses import dataclass, field

INTERVAL_S = 0.02
FIELDS = ("gpu_sm_clock_mhz", "gpu_mem_clock_mhz", "gpu_temperature_c", "gpu_power_w", "throttled",
          "throttle_reasons", "gpu_conditions_source")

# Clock-event reasons that slow the GPU down (idle, application clocks and
# display clocks do not: they are listed in no case's throttle_reasons).
_REASONS = {
    "SwPowerCap": "software power cap",
    "HwSlowdown": "hardware slowdown",
    "HwThermalSlowdown": "hardware thermal slowdown",
    "SwThermalSlowdown": "software thermal slowdown",
    "HwPowerBrakeSlowdown": "power brake",
}
_VIOLATIONS = {"POWER": "power limit", "THERMAL": "thermal limit", "RELIABILITY": "reliability limit",
               "BOARD_LIMIT": "board limit"}


def _pynvml():
    import pynvml

    return pynvml


def _reason_bits(nvml) -> dict[int, str]:
    bits = {}
    for name, text in _REASONS.items():
        value = getattr(nvml, f"nvmlClocksEventReason{name}", None)
        if value is None:
            value = getattr(nvml, f"nvmlClocksThrottleReason{name}", None)
        if value:
            bits[int(value)] = text
    return bits


def _current_reasons(nvml, handle) -> int:
    getter = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(getter(handle))


def visible_index() -> tuple[str, str | int]:
    """How to find the GPU a process uses in NVML: ('uuid', 'GPU-...') or
    ('index', i), from CUDA_VISIBLE_DEVICES (its first entry) or GPU 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.startswith(("GPU-", "MIG-")):
        return "uuid", visible
    if visible.isdigit():
        return "index", int(visible)
    return "index", 0


@dataclass
class Conditions:
    """What one case's samples saw."""

    source: str
    sm_clock: list[int] = field(default_factory=list)
    mem_clock: list[int] = field(default_factory=list)
    temperature: list[int] = field(default_factory=list)
    power_mw: list[int] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)
    available: bool = True

    def fields(self) -> dict:
        if not self.available:
            return {name: None for name in FIELDS} | {"gpu_conditions_source": self.source}
        return {
            "gpu_sm_clock_mhz": _median(self.sm_clock),
            "gpu_mem_clock_mhz": _median(self.mem_clock),
            "gpu_temperature_c": max(self.temperature) if self.temperature else None,
            "gpu_power_w": _median(self.power_mw) / 1e3 if self.power_mw else None,
            "throttled": bool(self.reasons),
            "throttle_reasons": ", ".join(sorted(self.reasons)),
            "gpu_conditions_source": self.source,
        }


def _median(values):
    return statistics.median(values) if values else None


class Monitor:
    """The NVML handle of the run's GPU, opened once per run."""

    def __init__(self, device_kind: str):
        self.handle = None
        self.nvml = None
        if device_kind != "gpu":
            self.reason = "none: a CPU run (NVML reports NVIDIA GPUs)"
            return
        try:
            nvml = _pynvml()
            nvml.nvmlInit()
            how, which = visible_index()
            self.handle = (nvml.nvmlDeviceGetHandleByUUID(which) if how == "uuid"
                           else nvml.nvmlDeviceGetHandleByIndex(which))
            self.nvml = nvml
            self.bits = _reason_bits(nvml)
            self.reason = (f"NVML (nvidia-ml-py), driver {_text(nvml.nvmlSystemGetDriverVersion())}: medians of "
                           f"samples every {INTERVAL_S * 1e3:.0f} ms during the timed rounds, temperature the "
                           "highest, throttle reasons seen in any sample or violation counter")
        except ImportError:
            self.reason = "none: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        except Exception as error:  # NVMLError subclasses: no driver, no library, no permission
            self.reason = f"none: NVML unavailable ({type(error).__name__}: {error})"

    def watch(self) -> Watch:
        return Watch(self)


class Watch:
    """`with monitor.watch() as w: ...` samples during the block; then `w.fields()`."""

    def __init__(self, monitor: Monitor):
        self.monitor = monitor
        self.conditions = Conditions(source=monitor.reason, available=monitor.handle is not None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._violations: dict[str, int] = {}

    def __enter__(self) -> Watch:
        if self.conditions.available:
            self._violations = self._violation_times()
            self._sample()
            self._thread = threading.Thread(target=self._run, name="nvml-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()
            after = self._violation_times()
            for name, before in self._violations.items():
                if after.get(name, before) > before:
                    self.conditions.reasons.add(_VIOLATIONS[name])

    def fields(self) -> dict:
        return self.conditions.fields()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._sample()

    def _sample(self) -> None:
        nvml, handle, c = self.monitor.nvml, self.monitor.handle, self.conditions
        for values, read in ((c.sm_clock, lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
                             (c.mem_clock, lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
                             (c.temperature, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                             (c.power_mw, lambda: nvml.nvmlDeviceGetPowerUsage(handle))):
            try:
                values.append(int(read()))
            except Exception:  # a reading this GPU or driver does not support: left out
                pass
        try:
            current = _current_reasons(nvml, handle)
            c.reasons.update(text for bit, text in self.monitor.bits.items() if current & bit)
        except Exception:
            pass

    def _violation_times(self) -> dict[str, int]:
        nvml, handle = self.monitor.nvml, self.monitor.handle
        times = {}
        for name in _VIOLATIONS:
            policy = getattr(nvml, f"NVML_PERF_POLICY_{name}", None)
            if policy is None:
                continue
            try:
                times[name] = int(nvml.nvmlDeviceGetViolationStatus(handle, policy).violationTime)
            except Exception:  # not supported on this GPU or driver
                continue
        return times


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
