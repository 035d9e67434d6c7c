"""The machine a run measures on (`bench.machine`): the datasheet peaks and L2
sizes each GPU name resolves to, and what nvidia-smi says, read from a
stand-in nvidia-smi on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench import machine
from tests import backend as tb

pytestmark = tb.BACKEND_INDEPENDENT

H100_SXM = "NVIDIA H100 80GB HBM3"  # what nvidia-smi and the frameworks call the SXM card


@pytest.mark.parametrize(("name", "dtype", "tf32", "flops", "bandwidth"), [
    (H100_SXM, "float32", False, 67e12, 3.35e12),
    (H100_SXM, "float32", True, 494.7e12, 3.35e12),
    (H100_SXM, "mixed_bfloat16", False, 989.4e12, 3.35e12),
    ("NVIDIA H100 PCIe", "float32", False, 51.2e12, 2.0e12),
    ("NVIDIA H200", "mixed_float16", True, 989.4e12, 4.8e12),
    ("NVIDIA A100-SXM4-80GB", "float32", False, 19.5e12, 2.039e12),
    ("NVIDIA A100-SXM4-40GB", "float32", False, 19.5e12, 1.555e12),
])
def test_peaks_of_known_devices(name, dtype, tf32, flops, bandwidth):
    assert machine.peaks(name, dtype, tf32) == {"peak_flops": flops, "peak_bandwidth": bandwidth}


@pytest.mark.parametrize("name", ["Tesla T4", "NVIDIA H100 NVL", "cpu", ""])
def test_unknown_devices_get_no_peak_rather_than_a_guess(name):
    assert machine.peaks(name, "float32", False) == {"peak_flops": None, "peak_bandwidth": None}


def test_l2_sizes():
    assert machine.l2_bytes(H100_SXM) == 50 * 2**20
    assert machine.l2_bytes("NVIDIA H200") == 60 * 2**20
    assert machine.l2_bytes("Tesla T4") is None


def test_slug_names_a_folder():
    assert machine.slug(H100_SXM) == "nvidia-h100-80gb-hbm3"
    assert len(machine.slug("x" * 100)) == 40
    assert machine.slug("x" * 39 + " 80GB") == "x" * 39  # cut at 40, then no dash at the end
    assert machine.slug("???") == "device"


def _fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_nvidia_smi_is_read_when_there(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, f"{H100_SXM}, 580.65.06, 81559 MiB")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert machine.nvidia_smi() == {"gpu_name": H100_SXM, "gpu_driver": "580.65.06", "gpu_memory": "81559 MiB"}
    assert machine.info()["gpu_name"] == H100_SXM


def test_a_failing_or_missing_nvidia_smi_says_nothing(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver", 9)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert machine.nvidia_smi() == {}
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert machine.nvidia_smi() == {}
    info = machine.info()
    assert "gpu_name" not in info and info["cpu_count"] >= 1 and info["cpu"]
