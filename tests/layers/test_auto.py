"""`auto`: every entry names an implementation of its backend and its evidence."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from layers import aggregation
from layers.aggregation import auto
from tests import backend as tb

ROOT = Path(__file__).resolve().parents[2]


def test_table_entries_are_valid():
    for key, choice in auto.TABLE.items():
        backend, device, mode, *precision = key
        assert backend in aggregation.get(choice.implementation).backends
        assert device in ("cpu", "gpu") and mode in ("inference", "training")
        assert precision in ([], ["float32"], ["half"])
        assert choice.evidence


def test_fallback_for_unmeasured_combinations():
    assert auto.choose("tensorflow", "gpu", "training") == "shiftsum"
    assert "not measured" in auto.evidence("tensorflow", "gpu", "training")
    assert auto.choose("jax", "cpu", "training") == "shiftsum"  # measured: not the fallback's evidence
    assert "not measured" not in auto.evidence("jax", "cpu", "training")


def test_fused_kernels_on_gpus_and_the_dtype_specific_entry():
    assert auto.choose("torch", "gpu", "training") == "triton"
    assert auto.choose("jax", "gpu", "training", "bfloat16") == "pallas"
    assert auto.choose("jax", "gpu", "inference", "float32") == "pallas"
    assert auto.choose("jax", "gpu", "inference", "bfloat16") == "shiftsum"
    assert auto.choose("jax", "gpu", "inference") == "pallas"  # no dtype: the float32 entry
    assert "H100" in auto.evidence("torch", "gpu", "inference")


def test_choices_are_every_pick_of_the_backend_and_the_fallback():
    assert auto.choices("torch") == ("shiftsum", "triton")
    assert auto.choices("tensorflow") == ("xla", "shiftsum")
    assert set(auto.choices("jax")) == {"shiftsum", "pallas"}
    assert auto.choices("numpy") == ("shiftsum",)  # nothing measured: the fallback only


@tb.BACKEND_INDEPENDENT
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_cpu_entries_are_the_fastest_in_their_rows(backend):
    """Each CPU choice is the fastest involution at every RedNet stage of the
    committed rows it cites, with its 95% interval below the next one's."""
    rows = pd.read_csv(ROOT / auto.CPU_ROWS.format(backend=backend))
    rows = rows[(rows["layer"] == "involution") & (rows["status"] == "ok")]
    assert (rows["device"] == "cpu").all() and (rows["interval_basis"] == "between processes").all()
    stages = rows.groupby(["mode", "resolution", "channels", "groups"])
    assert len(stages) == 6  # three stages, two modes
    for (mode, *_), stage in stages:
        first, second = stage.sort_values("time_ms").iloc[:2].itertuples()
        assert first.implementation == auto.choose(backend, "cpu", mode, "float32")
        assert first.time_ms_ci_high < second.time_ms_ci_low
