"""The option checks that need no framework (`bench.options`)."""

from __future__ import annotations

import pytest

from bench.options import UsageError, same_kernels

FLAT = {"unroll_window": False, "tile_width": 0}


def test_a_run_resumes_only_with_the_kernels_it_started_with():
    same_kernels({"kernel_switches": FLAT}, FLAT, "runs/a")
    same_kernels({}, FLAT, "runs/a")  # a run from before the switches were recorded
    tiles = {"unroll_window": False, "tile_width": 8}
    with pytest.raises(UsageError) as error:
        same_kernels({"kernel_switches": tiles}, FLAT, "runs/a")
    message = str(error.value)
    assert "\n" not in message and message.endswith("Received: --resume=runs/a")
    assert "started with INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=8" in message
    assert "this process has INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=0" in message
    # TensorFlow runs no Triton kernels: its tile width is None, and not named
    with pytest.raises(UsageError, match="started with INVOLUTION_UNROLL_WINDOW=1, this process has "
                                         "INVOLUTION_UNROLL_WINDOW=0;"):
        same_kernels({"kernel_switches": {"unroll_window": True, "tile_width": None}},
                             {"unroll_window": False, "tile_width": None}, "runs/a")
