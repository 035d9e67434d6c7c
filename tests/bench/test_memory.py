"""Peak memory of a step on a CPU (`bench.memory`): memray sees what a step
allocates and still holds at its peak, and not what existed before it."""

from __future__ import annotations

import numpy as np

from bench import memory
from tests import backend as tb

pytestmark = tb.BACKEND_INDEPENDENT

MB = 2**20


def test_peak_is_what_the_step_allocates():
    def step():
        a = np.ones(8 * MB // 8)  # 8 MB
        b = np.ones(16 * MB // 8)  # 16 MB, both alive at the peak
        return float(a[0] + b[0])

    peak = memory.peak_bytes(step)
    assert 24 * MB <= peak < 24 * MB + 4 * MB  # plus the interpreter's small change


def test_memory_freed_in_the_step_does_not_add_up():
    def step():
        for _ in range(4):
            np.ones(16 * MB // 8)  # 16 MB, freed before the next

    assert 16 * MB <= memory.peak_bytes(step) < 20 * MB


def test_inputs_made_before_the_step_do_not_count():
    weights = np.ones(32 * MB // 8)
    assert memory.peak_bytes(lambda: float(weights.sum())) < 4 * MB
