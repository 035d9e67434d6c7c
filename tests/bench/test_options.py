"""The option checks that need no framework (`bench.options`)."""

from __future__ import annotations

import pytest

from bench.options import UsageError, parse_shard, same_kernels

FLAT = {"INVOLUTION_UNROLL_WINDOW": 0, "INVOLUTION_TILE_WIDTH": 0}


def test_a_run_resumes_only_with_the_kernels_it_started_with():
    same_kernels({"kernel_switches": FLAT}, FLAT, "runs/a")
    same_kernels({}, FLAT, "runs/a")  # a run from before the switches were recorded
    same_kernels({"kernel_switches": {}}, {}, "runs/a")  # TensorFlow: no fused kernel, no switch
    tiles = FLAT | {"INVOLUTION_TILE_WIDTH": 8}
    with pytest.raises(UsageError) as error:
        same_kernels({"kernel_switches": tiles}, FLAT, "runs/a")
    message = str(error.value)
    assert "\n" not in message and message.endswith("Received: --resume=runs/a")
    assert "started with INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=8, this process has " \
           "INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=0;" in message
    assert "set INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=8, or start a new run" in message


@pytest.mark.parametrize("text", ["2/2", "a/b", "1/0", "-1/3", "3"])
def test_bad_shard(text):
    with pytest.raises(UsageError, match=f"Received: --shard={text}"):
        parse_shard(text)
