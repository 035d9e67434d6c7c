"""What `Involution(implementation="auto")` picks, and the measurement behind it.

Each entry is the implementation that was fastest when measured for a
backend, a device kind, a mode and, where the answer differs by precision,
the compute dtype ("float32" or "half": bfloat16/float16). `docs/PERF.md`
holds the measurements (machine, date, command). A combination nobody has
measured falls back to `shiftsum`, the portable implementation that never
builds the patch tensor.
"""

from __future__ import annotations

from typing import NamedTuple


class Choice(NamedTuple):
    implementation: str
    evidence: str


FALLBACK = Choice("shiftsum", "not measured: portable default")
HALF = ("bfloat16", "float16")

# PERF 2 and 26 chose the CPU entries; in PERF 32's re-measurement (3 processes
# a case, these rows) each was the fastest, its interval below the next one's,
# which tests/layers/test_auto.py checks against the rows.
CPU_ROWS = "docs/results/cpu-stages-32-{backend}.csv"
_CPU = ("docs/PERF.md 'The CPU comparison at the current code': AMD EPYC, 2 cores, 2026-12-07, RedNet stages "
        f"at batch 8, 3 processes ({CPU_ROWS})")
_H100 = ("docs/PERF.md 'GPU': H100 80GB HBM3, 2026-11-22, python -m bench.targets (RedNet stages, batch 64, "
         "whole layer)")

# (backend, device, mode) or (backend, device, mode, "float32" | "half"); the
# longer key wins.
TABLE: dict[tuple[str, ...], Choice] = {
    ("tensorflow", "cpu", "inference"): Choice("xla", _CPU),
    ("tensorflow", "cpu", "training"): Choice("xla", _CPU),
    ("jax", "cpu", "inference"): Choice("shiftsum", _CPU),
    # With its own gradient the shift-sum trains 2.1-2.5x faster than the
    # stacked patches, in a third of their memory (XLA's automatic
    # differentiation of it was 2-3x slower than theirs); not at one channel
    # per group, where the patches' gradient was 1.7x faster (PERF 26).
    ("jax", "cpu", "training"): Choice("shiftsum", _CPU),
    ("torch", "cpu", "inference"): Choice("shiftsum", _CPU),
    ("torch", "cpu", "training"): Choice("shiftsum", _CPU),
    # Pallas: 0.59-0.92x shift-sum's time in float32 forward, 0.18-0.53x in
    # forward + backward; in bfloat16 forward shift-sum won 2 of 3 stages.
    ("jax", "gpu", "inference"): Choice("pallas", _H100),
    ("jax", "gpu", "inference", "half"): Choice("shiftsum", _H100),
    ("jax", "gpu", "training"): Choice("pallas", _H100),
    # Triton: 2.4-10x faster than shift-sum in every measured case.
    ("torch", "gpu", "inference"): Choice("triton", _H100),
    ("torch", "gpu", "training"): Choice("triton", _H100),
}


def _lookup(backend_name: str, device: str, mode: str, dtype: str | None) -> Choice:
    precision = "half" if dtype in HALF else "float32"
    for key in ((backend_name, device, mode, precision), (backend_name, device, mode)):
        if key in TABLE:
            return TABLE[key]
    return FALLBACK


def choices(backend_name: str) -> tuple[str, ...]:
    """Every implementation `auto` can pick on the backend, in any device, mode or dtype."""
    picked = [choice.implementation for key, choice in TABLE.items() if key[0] == backend_name]
    return tuple(dict.fromkeys([*picked, FALLBACK.implementation]))


def choose(backend_name: str, device: str, mode: str, dtype: str | None = None) -> str:
    """The implementation for (backend, device kind "cpu"/"gpu", mode, compute dtype)."""
    return _lookup(backend_name, device, mode, dtype).implementation


def evidence(backend_name: str, device: str, mode: str, dtype: str | None = None) -> str:
    return _lookup(backend_name, device, mode, dtype).evidence
