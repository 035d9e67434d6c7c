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

TABLE: dict[tuple[str, str, str], Choice] = {}


def choose(backend_name: str, device: str, mode: str) -> str:
    """The implementation for (backend, device kind "cpu"/"gpu", mode)."""
    return TABLE.get((backend_name, device, mode), FALLBACK).implementation


def evidence(backend_name: str, device: str, mode: str) -> str:
    return TABLE.get((backend_name, device, mode), FALLBACK).evidence
