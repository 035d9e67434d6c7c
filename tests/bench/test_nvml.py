"""GPU conditions through NVML (`bench.nvml`): without NVML every field is
None with the reason; with it (a fake NVML here) the samples and the
throttle reasons seen during the rounds become the row's fields."""

from __future__ import annotations

import time
import types

import pytest

from bench import nvml


def test_a_cpu_run_has_no_conditions_and_says_why():
    watch = nvml.Monitor("cpu").watch()
    with watch:
        pass
    fields = watch.fields()
    assert set(fields) == set(nvml.FIELDS)
    assert all(fields[name] is None for name in nvml.FIELDS if name != "gpu_conditions_source")
    assert fields["gpu_conditions_source"] == "none: a CPU run (NVML reports NVIDIA GPUs)"


def test_nvml_unavailable_is_null_with_the_reason(monkeypatch):
    def broken():
        module = types.SimpleNamespace()

        def init():
            raise OSError("NVML Shared Library Not Found")

        module.nvmlInit = init
        return module

    monkeypatch.setattr(nvml, "_pynvml", broken)
    monitor = nvml.Monitor("gpu")
    with monitor.watch() as watch:
        pass
    fields = watch.fields()
    assert fields["throttled"] is None and fields["gpu_sm_clock_mhz"] is None
    assert fields["gpu_conditions_source"] == "none: NVML unavailable (OSError: NVML Shared Library Not Found)"


def test_nvml_not_installed_says_how_to_install(monkeypatch):
    def missing():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml, "_pynvml", missing)
    assert "pip install nvidia-ml-py" in nvml.Monitor("gpu").reason


class FakeNvml:
    """The part of pynvml that bench.nvml reads, with settable readings."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    NVML_PERF_POLICY_POWER, NVML_PERF_POLICY_THERMAL = 0, 1
    nvmlClocksEventReasonGpuIdle = 0x1
    nvmlClocksEventReasonSwPowerCap = 0x4
    nvmlClocksEventReasonHwSlowdown = 0x8

    def __init__(self):
        self.reasons = 0x1  # idle: not a slowdown
        self.violations = {0: 1000, 1: 5000}
        self.handles = []

    def nvmlInit(self):
        pass

    def nvmlSystemGetDriverVersion(self):
        return b"580.159.04"

    def nvmlDeviceGetHandleByIndex(self, index):
        self.handles.append(("index", index))
        return "gpu0"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.handles.append(("uuid", uuid))
        return "gpu0"

    def nvmlDeviceGetClockInfo(self, handle, which):
        return {1: 1980, 2: 2619}[which]

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 41

    def nvmlDeviceGetPowerUsage(self, handle):
        return 312_000  # milliwatts

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.reasons

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        return types.SimpleNamespace(violationTime=self.violations[policy])


def _samples_taken(watch, count: int) -> None:
    """Wait until the sampling thread has taken `count` more samples (however
    loaded the machine is), or fail after 30 s."""
    target = len(watch.conditions.sm_clock) + count
    deadline = time.monotonic() + 30
    while len(watch.conditions.sm_clock) < target:
        assert time.monotonic() < deadline, "the NVML sampling thread took no sample in 30 s"
        time.sleep(nvml.INTERVAL_S / 4)


@pytest.fixture
def fake(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setattr(nvml, "_pynvml", lambda: fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def test_samples_become_fields(fake):
    monitor = nvml.Monitor("gpu")
    assert monitor.reason.startswith("NVML (nvidia-ml-py), driver 580.159.04")
    with monitor.watch() as watch:
        _samples_taken(watch, 2)
    fields = watch.fields()
    assert fields["gpu_sm_clock_mhz"] == 1980 and fields["gpu_mem_clock_mhz"] == 2619
    assert fields["gpu_temperature_c"] == 41 and fields["gpu_power_w"] == pytest.approx(312.0)
    assert fields["throttled"] is False and fields["throttle_reasons"] == ""  # idle is not throttling
    assert len(watch.conditions.sm_clock) >= 4  # sampled during the block, not only at its ends


def test_a_reason_seen_during_the_rounds_marks_the_case(fake):
    with nvml.Monitor("gpu").watch() as watch:
        fake.reasons = 0x4 | 0x8
        _samples_taken(watch, 2)
        fake.reasons = 0x1  # gone again before the end: still seen
    fields = watch.fields()
    assert fields["throttled"] is True
    assert fields["throttle_reasons"] == "hardware slowdown, software power cap"


def test_a_violation_counter_that_moved_marks_the_case(fake):
    with nvml.Monitor("gpu").watch() as watch:
        fake.violations[1] += 250_000  # 0.25 ms held back by the thermal limit
    fields = watch.fields()
    assert fields["throttled"] is True and fields["throttle_reasons"] == "thermal limit"


def test_the_gpu_is_found_from_cuda_visible_devices(fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    nvml.Monitor("gpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8c1e0a37-1f0b")
    nvml.Monitor("gpu")
    assert fake.handles == [("index", 3), ("uuid", "GPU-8c1e0a37-1f0b")]
