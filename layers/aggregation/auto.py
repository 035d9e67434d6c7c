"""What `Involution(implementation="auto")` picks, and the measurement behind it.

Each entry is the implementation that was fastest when measured for a
backend, a device kind and a mode; `docs/PERF.md` holds the measurements
(machine, date, command). A combination nobody has measured falls back to
`shiftsum`, the portable implementation that never builds the patch tensor.
"""

from __future__ import annotations

from typing import NamedTuple


class Choice(NamedTuple):
    implementation: str
    evidence: str


FALLBACK = Choice("shiftsum", "not measured: portable default")

_CPU = "docs/PERF.md 'What auto picks': AMD EPYC, 2 cores, 2026-11-22, RedNet stages at batch 8"
_H100 = ("BASELINES.md: H100, JAX jit, RedNet stages, the stacked and shift-sum keras.ops formulations "
         "(measured before this project, not re-measured with this code)")

TABLE: dict[tuple[str, str, str], Choice] = {
    ("tensorflow", "cpu", "inference"): Choice("xla", _CPU),
    ("tensorflow", "cpu", "training"): Choice("xla", _CPU),
    ("jax", "cpu", "inference"): Choice("shiftsum", _CPU),
    # XLA's gradient of the shift-sum is slow; the stacked patches' is not.
    ("jax", "cpu", "training"): Choice("reference", _CPU),
    ("torch", "cpu", "inference"): Choice("shiftsum", _CPU),
    ("torch", "cpu", "training"): Choice("shiftsum", _CPU),
    ("jax", "gpu", "inference"): Choice("shiftsum", _H100),
    ("jax", "gpu", "training"): Choice("reference", _H100),
}


def choose(backend_name: str, device: str, mode: str) -> str:
    """The implementation for (backend, device kind "cpu"/"gpu", mode)."""
    return TABLE.get((backend_name, device, mode), FALLBACK).implementation


def evidence(backend_name: str, device: str, mode: str) -> str:
    return TABLE.get((backend_name, device, mode), FALLBACK).evidence
