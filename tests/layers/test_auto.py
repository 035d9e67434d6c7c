"""`auto`: every entry names an implementation of its backend and its evidence."""

from __future__ import annotations

from layers import aggregation
from layers.aggregation import auto


def test_table_entries_are_valid():
    for (backend, device, mode), choice in auto.TABLE.items():
        assert backend in aggregation.get(choice.implementation).backends
        assert device in ("cpu", "gpu") and mode in ("inference", "training")
        assert choice.evidence


def test_fallback_for_unmeasured_combinations():
    assert auto.choose("torch", "gpu", "training") == "shiftsum"
    assert "not measured" in auto.evidence("torch", "gpu", "training")
    assert auto.choose("jax", "cpu", "training") == "reference"
