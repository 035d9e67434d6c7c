"""`python -m bench.targets`: the target table, the timer and a tiny run."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from bench import targets
from tests import backend as tb


def _row(what, layer, impl, dtype, mode, step_s, **extra):
    return {"what": what, "layer": layer, "implementation": impl, "dtype": dtype, "mode": mode, "step_s": step_s,
            "resolution": 56, "channels": 64, "groups": 4, "status": "ok", **extra}


def _timed(row: dict, spread: float = 0.02, rounds: int = 30) -> dict:
    """The row with rounds around its step (lognormal, `spread`) and their interval, as `time_step` gives."""
    from bench import intervals

    seconds = list(row["step_s"] * np.random.default_rng(rounds).lognormal(0.0, spread, rounds))
    low, high = intervals.median_interval(seconds)
    return row | {targets.ROUNDS: seconds, "step_ci_low_s": low, "step_ci_high_s": high}


def test_target_table_ratios_and_verdicts():
    rows = [
        _row("layer", "involution", "triton", "float32", "inference", 0.2e-3, bytes_min=100e6),
        _row("layer", "conv2d", "keras", "float32", "inference", 0.8e-3),
        _row("layer", "depthwise", "keras", "float32", "inference", 0.1e-3),
        _row("layer", "involution", "triton", "float32", "training", 1.0e-3),
        _row("layer", "conv2d", "keras", "float32", "training", 2.0e-3),
        _row("aggregation", "aggregation", "triton", "float32", "inference", 1e-4, gbytes_per_s=2500.0,
             bytes=2500e9 * 1e-4),
    ]
    lines = {line["target"]: line for line in targets.target_table(rows, ["triton"], 3.35e12)}
    conv = lines["float32 forward / Conv2D (TF32) <= 0.33"]
    assert conv["measured"] == pytest.approx(0.25) and conv["holds"]
    depthwise = lines["float32 forward / DepthwiseConv2D <= 1.0"]
    assert depthwise["measured"] == pytest.approx(2.0) and not depthwise["holds"]
    assert lines["float32 fwd+bwd / Conv2D (TF32) <= 0.7"]["measured"] == pytest.approx(0.5)
    bandwidth = lines["aggregation float32 forward >= 65% of bandwidth"]
    assert bandwidth["measured"] == pytest.approx(2500e9 / 3.35e12) and bandwidth["holds"]
    floor = lines["fused float32 forward layer >= 40% of its floor"]
    assert floor["measured"] == pytest.approx(100e6 / 3.35e12 / 0.2e-3) and not floor["holds"]
    # Unmeasured targets say so instead of passing.
    missing = lines["bfloat16 forward / Conv2D bf16 <= 0.5"]
    assert missing["measured"] is None and not missing["holds"]
    assert not lines["aggregation bfloat16 forward >= 50% of bandwidth"]["holds"]
    # Rows without rounds have no interval: a target cannot hold at 95%.
    assert not conv["holds_95"] and conv["low"] != conv["low"]
    assert "| 56 px C 64 G 4 | triton | float32 forward / Conv2D (TF32) <= 0.33 | 0.25 | - | yes | no |" in \
        targets.markdown(list(lines.values()))


def test_targets_carry_the_interval_of_their_measurement():
    rows = [
        _timed(_row("layer", "involution", "triton", "float32", "inference", 0.2e-3, bytes_min=100e6)),
        _timed(_row("layer", "conv2d", "keras", "float32", "inference", 0.8e-3), rounds=31),
        _timed(_row("layer", "depthwise", "keras", "float32", "inference", 0.21e-3), spread=0.2, rounds=32),
        _timed(_row("aggregation", "aggregation", "triton", "float32", "inference", 1e-4, bytes=0.66 * 3.35e12 * 1e-4,
                    gbytes_per_s=0.66 * 3.35e3), spread=0.1),
    ]
    lines = {line["target"]: line for line in targets.target_table(rows, ["triton"], 3.35e12)}
    conv = lines["float32 forward / Conv2D (TF32) <= 0.33"]
    assert conv["low"] < conv["measured"] < conv["high"] < 0.33 and conv["holds"] and conv["holds_95"]
    # 0.2 / 0.21 ms with rounds 20% apart: it holds, but its interval crosses 1
    depthwise = lines["float32 forward / DepthwiseConv2D <= 1.0"]
    assert depthwise["holds"] and depthwise["low"] < 1.0 < depthwise["high"] and not depthwise["holds_95"]
    # 66% of the bandwidth with rounds 10% apart: the interval reaches below 65%
    bandwidth = lines["aggregation float32 forward >= 65% of bandwidth"]
    assert bandwidth["measured"] == pytest.approx(0.66) and bandwidth["holds"] and not bandwidth["holds_95"]
    assert bandwidth["low"] < 0.65 < bandwidth["high"]
    table = targets.markdown(list(lines.values()))
    assert f"| 0.25 | {conv['low']:.2f}–{conv['high']:.2f} | yes | yes |" in table


def test_a_fused_layer_with_wrong_outputs_meets_no_target():
    rows = [
        _row("layer", "involution", "triton", "float32", "inference", 0.1e-3, bytes_min=100e6,
             rel_err_vs_shiftsum=0.7),
        _row("layer", "conv2d", "keras", "float32", "inference", 0.8e-3),
        _row("layer", "involution", "triton", "float32", "training", 1.0e-3, rel_err_vs_shiftsum=3e-3),
        _row("layer", "conv2d", "keras", "float32", "training", 2.0e-3),
    ]
    lines = {line["target"]: line for line in targets.target_table(rows, ["triton"], 3.35e12)}
    conv = lines["float32 forward / Conv2D (TF32) <= 0.33"]
    assert conv["measured"] == pytest.approx(0.125) and not conv["holds"]
    assert conv["detail"].endswith("(wrong: rel_err_vs_shiftsum 7.0e-01 > 0.01)")
    assert not lines["fused float32 forward layer >= 40% of its floor"]["holds"]
    assert lines["float32 fwd+bwd / Conv2D (TF32) <= 0.7"]["holds"]  # 3e-3: TF32's rounding, not a fault


def test_relative_error_measures_a_zero_gradient_against_the_whole():
    import numpy as np

    x_grad, bias_grad = np.ones(100), np.array([1e-9, -2e-9])  # the bias: zero but for rounding
    assert targets.relative_error([x_grad, bias_grad * -1], [x_grad, bias_grad]) < 1e-6
    assert targets.relative_error([1.5 * x_grad, bias_grad], [x_grad, bias_grad]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="1 outputs against the reference's 2"):
        targets.relative_error([x_grad], [x_grad, bias_grad])


def test_fused_and_portable_implementations_come_from_the_registry():
    assert targets.fused_implementations("torch") == ["triton", "triton_fused"]
    assert targets.fused_implementations("jax") == ["pallas", "pallas_fused", "triton", "triton_fused"]
    assert targets.fused_implementations("tensorflow") == []
    assert "shiftsum" in targets.portable_implementations("jax")
    assert "reference" not in targets.portable_implementations("torch")  # it builds the patch tensor


def test_an_implementation_generating_on_chip_is_judged_on_its_own_layer_and_its_aggregation():
    rows = [
        _row("layer", "involution", "triton_fused", "float32", "inference", 0.1e-3, bytes_min=100e6),
        _row("layer", "conv2d", "keras", "float32", "inference", 0.8e-3),
        _row("aggregation", "aggregation", "triton", "float32", "inference", 1e-4, gbytes_per_s=2500.0,
             bytes=2500e9 * 1e-4),
    ]
    lines = targets.target_table(rows, ["triton", "triton_fused"], 3.35e12)
    assert len(lines) == 2 * 7
    mine = {line["target"]: line for line in lines if line["implementation"] == "triton_fused"}
    assert mine["float32 forward / Conv2D (TF32) <= 0.33"]["measured"] == pytest.approx(0.125)
    bandwidth = mine["aggregation float32 forward >= 65% of bandwidth"]
    assert bandwidth["holds"] and "the aggregation of 'triton'" in bandwidth["detail"]
    assert mine["fused float32 forward layer >= 40% of its floor"]["measured"] == pytest.approx(
        100e6 / 3.35e12 / 0.1e-3)


def test_time_step_uses_the_suite_timer():
    from bench import backends, timing

    calls = {"run": 0, "sync": 0}

    def run():
        calls["run"] += 1
        return calls["run"]

    def sync(out):
        calls["sync"] += 1

    timer = timing.for_runner(backends.current(), "warm", cap_s=0.05, min_rounds=3)
    timed = targets.time_step(timer, run, sync)
    assert timed["step_s"] > 0 and timed["latency_s"] > 0 and timed["rounds"] >= 3
    assert timed["l2"] == "warm" and timed["device_time_source"].startswith("none: a CPU run")
    assert timed["step_s"] == timed["latency_s"]  # no device clock on a CPU: the latency is the step time
    seconds = timed[targets.ROUNDS]
    assert len(seconds) == timed["rounds"] and timed["step_s"] == pytest.approx(np.median(seconds))
    assert timed["step_ci_low_s"] <= timed["step_s"] <= timed["step_ci_high_s"]


def test_with_a_device_clock_the_step_is_the_device_series():
    from bench import timing

    latency = timing.Series(tuple(1e-3 * (1 + 0.01 * i) for i in range(10)), "precision", 0.1)
    device = timing.Series(tuple(8e-4 * (1 + 0.01 * i) for i in range(12)), "precision", 0.1)
    measurement = timing.Measurement(latency, device, "CUDA events (stand-in)", "cold", 2**20, None, None)

    class Timer:
        def measure(self, run, estimate):
            return measurement

    timed = targets.time_step(Timer(), lambda: None, lambda out: None)
    assert timed["step_s"] == device.median and timed["latency_s"] == latency.median
    assert (timed["step_ci_low_s"], timed["step_ci_high_s"]) == device.interval()
    assert timed[targets.ROUNDS] == list(device.seconds)


def test_bad_stages_are_named():
    with pytest.raises(argparse.ArgumentTypeError, match=r"--stages.*Received: --stages=56:64:5"):
        targets._stages("56:64:5")


@pytest.mark.skipif(tb.NAME == "tensorflow", reason="the fused kernels are JAX and PyTorch code")
def test_tiny_run_writes_rows_and_table(tmp_path, capsys):
    code = targets.main(["--out", str(tmp_path), "--batch", "1", "--stages", "6:4:2", "--time", "0.01",
                         "--min-rounds", "2",
                         "--dtypes", "float32", "--modes", "inference", "--impls", "shiftsum"])
    assert code == 0
    frame = pd.read_csv(tmp_path / f"targets-{tb.NAME}.csv")
    assert set(frame.status) == {"ok"}
    assert {"involution", "conv2d", "depthwise", "aggregation"} <= set(frame.layer)
    assert (frame.step_s > 0).all()
    enough = frame.rounds >= 3  # a median's interval needs three rounds (--min-rounds 2 here)
    assert (frame.step_ci_low_s[enough] <= frame.step_s[enough]).all() and frame.step_ci_low_s[~enough].isna().all()
    assert targets.ROUNDS not in frame  # the rounds stay out of the CSV; their interval is in it
    lines_per_stage = 7 * len(targets.fused_implementations(tb.NAME))  # unmeasured targets are listed too
    assert (tmp_path / f"targets-{tb.NAME}.md").read_text().count("| 6 px C 4 G 2 |") == lines_per_stage
    aggregation = frame[frame.what == "aggregation"].iloc[0]
    # bytes from layers.counting: input + generated kernel + output, float32
    assert aggregation["bytes"] == 4 * (36 * 4 + 36 * 2 * 49 + 36 * 4)
    assert "aggregation float32 forward" in capsys.readouterr().out
    assert set(frame.rows_per_step) == {1} and set(frame.tile_width) == {0}  # the kernels' defaults
    layers = frame[frame.what == "layer"]
    assert layers.triton_tiles_tuned.isna().all() and layers.triton_tiles_source.str.startswith("none: ").all()


@pytest.mark.skipif(tb.NAME != "jax", reason="JAX's persistent compilation cache (PyTorch's eager layers compile "
                    "nothing on a CPU)")
def test_precompiled_layer_steps_load_from_the_cache(tmp_path, monkeypatch, capsys):
    """--precompile: the workers compile every layer case (both modes) into
    the cache, a relative --compile-cache included (they run from the
    repository's root), and each timed row says its code came from there;
    the output folder holds the CSV and the table only. The training steps
    too: the workers' cotangent (zeros) differs from the timed one (random),
    and as a constant of the program it made each of them a miss."""
    monkeypatch.chdir(tmp_path)
    code = targets.main(["--out", "out", "--batch", "1", "--stages", "6:4:2", "--time", "0.01", "--min-rounds", "2",
                         "--dtypes", "float32", "--modes", "inference,training", "--impls", "shiftsum",
                         "--precompile", "2", "--compile-cache", "cache"])
    assert code == 0
    assert "precompile: 6 of 6 cases compiled into the cache by 2 processes" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "out" / "targets-jax.csv")
    layers = frame[frame.what == "layer"]
    assert len(layers) == 6 and set(layers.compile_cache) == {"hit"}, layers[["layer", "mode", "compile_cache"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["targets-jax.csv", "targets-jax.md"]
    assert any((tmp_path / "cache" / "jax").iterdir())


def test_bad_precompile_options_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        targets.main(["--out", "unused", "--precompile", "-1"])
    assert exit_info.value.code == 2
    assert "Received: --precompile=-1 --precompile-time=300.0" in capsys.readouterr().err


@pytest.mark.parametrize("args, received", [
    (["--dtypes", "float32,float64"], "Received: --dtypes=float32,float64"),
    (["--modes", "infer"], "Received: --modes=infer"),
    (["--out", "{blocker}/out"], "Received: --out={blocker}/out"),
    (["--compile-cache", "{blocker}/cache"], "Received: --compile-cache={blocker}/cache"),
])
def test_bad_lists_and_unwritable_folders_are_one_line(tmp_path, capsys, args, received):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        targets.main(["--out", str(tmp_path / "out"), *(a.format(blocker=blocker) for a in args)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(received.format(blocker=blocker)), err


@pytest.mark.skipif(tb.NAME == "tensorflow", reason="the fused kernels are JAX and PyTorch code")
def test_each_involution_layer_is_checked_against_the_portable_one(tmp_path):
    """The fused layer (here in its interpreter) runs on the reference
    layer's weights and input; its row carries the relative error of its
    outputs, or of its gradients in training."""
    fused = {"jax": "pallas_fused", "torch": "triton_fused"}[tb.NAME]
    code = targets.main(["--out", str(tmp_path), "--batch", "2", "--stages", "5:8:2", "--time", "0.01",
                         "--min-rounds", "2", "--dtypes", "float32", "--impls", f"{fused},shiftsum"])
    assert code == 0
    frame = pd.read_csv(tmp_path / f"targets-{tb.NAME}.csv")
    layers = frame[(frame.what == "layer") & (frame.layer == "involution")]
    assert set(layers.status) == {"ok"}
    checked = layers[layers.implementation != "shiftsum"]
    assert len(checked) == 2 and checked.rel_err_vs_shiftsum.notna().all()
    assert (checked.rel_err_vs_shiftsum < 1e-4).all(), checked[["implementation", "mode", "rel_err_vs_shiftsum"]]
    assert layers[layers.implementation == "shiftsum"].rel_err_vs_shiftsum.isna().all()


@pytest.mark.skipif(tb.NAME == "tensorflow", reason="the fused kernels are JAX and PyTorch code")
def test_a_bad_tile_width_is_refused_before_any_case(tmp_path, capsys, set_switch):
    set_switch("INVOLUTION_TILE_WIDTH", "6")
    with pytest.raises(SystemExit) as exit_info:
        targets.main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "Received: INVOLUTION_TILE_WIDTH='6'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(tb.NAME != "tensorflow", reason="checks the refusal on TensorFlow")
def test_tensorflow_is_refused_with_a_reason(capsys):
    with pytest.raises(SystemExit) as exit_info:
        targets.main(["--out", "unused"])
    assert exit_info.value.code == 2
    assert "KERAS_BACKEND=jax" in capsys.readouterr().err
