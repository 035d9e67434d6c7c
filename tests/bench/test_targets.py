"""`python -m bench.targets`: the target table, the timer and a tiny run."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from bench import targets
from tests import backend as tb


def _row(what, layer, impl, dtype, mode, step_s, **extra):
    return {"what": what, "layer": layer, "implementation": impl, "dtype": dtype, "mode": mode, "step_s": step_s,
            "resolution": 56, "channels": 64, "groups": 4, "status": "ok", **extra}


def test_target_table_ratios_and_verdicts():
    rows = [
        _row("layer", "involution", "triton", "float32", "inference", 0.2e-3),
        _row("layer", "conv2d", "keras", "float32", "inference", 0.5e-3),
        _row("layer", "depthwise", "keras", "float32", "inference", 0.1e-3),
        _row("layer", "involution", "triton", "mixed_bfloat16", "training", 1.0e-3),
        _row("layer", "conv2d", "keras", "mixed_bfloat16", "training", 2.0e-3),
        _row("aggregation", "aggregation", "triton", "float32", "inference", 1e-4, gbytes_per_s=2500.0),
    ]
    lines = {line["target"]: line for line in targets.target_table(rows, "triton", 3.35e12)}
    conv = lines["float32 forward / Conv2D (TF32) <= 0.5"]
    assert conv["measured"] == pytest.approx(0.4) and conv["holds"]
    depthwise = lines["float32 forward / DepthwiseConv2D <= 1.0"]
    assert depthwise["measured"] == pytest.approx(2.0) and not depthwise["holds"]
    assert lines["bfloat16 fwd+bwd / Conv2D bf16 <= 1.0"]["measured"] == pytest.approx(0.5)
    bandwidth = lines["aggregation float32 forward >= 60% of bandwidth"]
    assert bandwidth["measured"] == pytest.approx(2500e9 / 3.35e12) and bandwidth["holds"]
    # Unmeasured targets say so instead of passing.
    missing = lines["bfloat16 forward / Conv2D bf16 <= 0.75"]
    assert missing["measured"] is None and not missing["holds"]
    assert "| 56 px C 64 G 4 | float32 forward / Conv2D (TF32) <= 0.5 | 0.40 | yes |" in targets.markdown(
        list(lines.values()))


def test_time_step_waits_for_every_round():
    calls = {"run": 0, "sync": 0}

    def run():
        calls["run"] += 1
        return calls["run"]

    def sync(out):
        calls["sync"] += 1

    timed = targets.time_step(run, sync, rounds=3, round_seconds=0.0)
    assert timed.steps_per_round >= 1 and timed.step_s > 0 and timed.latency_s > 0
    # warm-up rounds, 3 latency rounds and 3 multi-step rounds each end with one wait
    assert calls["sync"] >= 3 + 3 + 5


def test_bad_stages_are_named():
    with pytest.raises(argparse.ArgumentTypeError, match=r"--stages.*Received: --stages=56:64:5"):
        targets._stages("56:64:5")


@pytest.mark.skipif(tb.NAME == "tensorflow", reason="the fused kernels are JAX and PyTorch code")
def test_tiny_run_writes_rows_and_table(tmp_path, capsys):
    code = targets.main(["--out", str(tmp_path), "--batch", "1", "--stages", "6:4:2", "--rounds", "1",
                         "--dtypes", "float32", "--modes", "inference", "--impls", "shiftsum"])
    assert code == 0
    frame = pd.read_csv(tmp_path / f"targets-{tb.NAME}.csv")
    assert set(frame.status) == {"ok"}
    assert {"involution", "conv2d", "depthwise", "aggregation"} <= set(frame.layer)
    assert (frame.step_s > 0).all()
    assert (tmp_path / f"targets-{tb.NAME}.md").read_text().count("| 6 px C 4 G 2 |") == 7
    assert "aggregation float32 forward" in capsys.readouterr().out


@pytest.mark.skipif(tb.NAME != "tensorflow", reason="checks the refusal on TensorFlow")
def test_tensorflow_is_refused_with_a_reason(capsys):
    with pytest.raises(SystemExit) as exit_info:
        targets.main(["--out", "unused"])
    assert exit_info.value.code == 2
    assert "KERAS_BACKEND=jax" in capsys.readouterr().err
