"""The machine a run measures on: CPU, GPU, versions, and the device's peaks.

Peaks are datasheet figures (dense, no sparsity), used only to express
achieved rates as a fraction of what the device can do; the table says which
device and precision each comes from. Devices not in the table get no
fraction rather than a guess.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

# name pattern -> {precision: FLOP/s, "bandwidth": bytes/s}; NVIDIA datasheets.
DATASHEET_PEAKS = {
    r"H200": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12, "bandwidth": 4.8e12},
    r"H100.*(SXM|HBM3)": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12, "bandwidth": 3.35e12},
    r"H100.*PCIe": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12, "bandwidth": 2.0e12},
    r"A100.*80GB": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12, "bandwidth": 2.039e12},
    r"A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12, "bandwidth": 1.555e12},
    r"L4\b": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12, "bandwidth": 0.3e12},
}


# name pattern -> L2 cache bytes, for backends that cannot ask the device
# (PyTorch reads it from the device properties). NVIDIA's architecture
# whitepapers; the H200's as PyTorch reports it.
L2_BYTES = {
    r"H200": 60 * 2**20,
    r"H100": 50 * 2**20,
    r"A100": 40 * 2**20,
    r"L4\b": 48 * 2**20,
}


def l2_bytes(device_name: str) -> int | None:
    for pattern, size in L2_BYTES.items():
        if re.search(pattern, device_name):
            return size
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi() -> dict[str, str]:
    """Driver version, name and memory of GPU 0, if nvidia-smi is there."""
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.splitlines()[0]
    except (subprocess.SubprocessError, OSError, IndexError):
        return {}
    name, driver, mem = (part.strip() for part in out.split(",")[:3])
    return {"gpu_name": name, "gpu_driver": driver, "gpu_memory": mem}


def peaks(device_name: str, dtype: str, tf32: bool) -> dict[str, float | None]:
    """Peak FLOP/s and bytes/s of a device for a case's dtype, or None."""
    for pattern, table in DATASHEET_PEAKS.items():
        if re.search(pattern, device_name):
            precision = {"mixed_bfloat16": "bf16", "mixed_float16": "fp16"}.get(dtype, "tf32" if tf32 else "fp32")
            return {"peak_flops": table[precision], "peak_bandwidth": table["bandwidth"]}
    return {"peak_flops": None, "peak_bandwidth": None}


def slug(text: str) -> str:
    """`text` as a folder name: lower-case letters, digits and dashes, at most 40 characters."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower())[:40].strip("-") or "device"


def info() -> dict[str, str | int]:
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count() or 0, "python": platform.python_version(),
            "platform": platform.platform()} | nvidia_smi()
