"""The A/B scripts under docs/results/ run, at one tiny case each, on the
backends they are for: PERF.md cites their output, and two of them once
stopped measuring what PERF.md says (section 28) without anything failing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests import backend as tb

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
# (batch, resolution, channels, groups, kernel size, stride): a stride of 1 and of 2
TINY = [(1, 8, 8, 2, 3, 1), (1, 9, 8, 2, 3, 2)]


def _script(name: str, **constants) -> ModuleType:
    if str(RESULTS) not in sys.path:  # as when run: the scripts import their folder's `_ab`
        sys.path.insert(0, str(RESULTS))
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), RESULTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where torch.compile looks up the module of a function it traces
    spec.loader.exec_module(module)
    for key, value in constants.items():
        assert hasattr(module, key), key  # the test keeps up with the script's names
        setattr(module, key, value)
    return module


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_grad_ab(capsys):
    _script("cpu-grad-ab", CASES=TINY, SECONDS=0.01).main()
    rows = [json.loads(line) for line in _lines(capsys)]
    assert [row["case"] for row in rows] == ["B1 8px C8 G2 K3 s1", "B1 9px C8 G2 K3 s2"]
    assert all(row["backend"] == tb.NAME and row["rounds"] >= 5 and row["own_ms"] > 0 for row in rows)


def test_taps_ab(capsys):
    _script("cpu-taps-ab", CASES=TINY, SECONDS=0.01).main()
    lines = _lines(capsys)
    assert len(lines) == 4 and all(line.startswith(f"{tb.NAME} ") and "indexed" in line and "split" in line
                                   for line in lines)


def test_windows_ab(capsys):
    _script("cpu-windows-ab", CASES=TINY, SECONDS=0.01).main()
    lines = _lines(capsys)
    assert len(lines) == 4 and all(line.startswith(f"{tb.NAME} ") and "per window" in line and "split once" in line
                                   for line in lines)


@pytest.mark.skipif(tb.NAME != "tensorflow", reason=(
    "cpu-strides-xla-ab.py times TensorFlow's XLA only (the stride phases exist on TensorFlow alone); tox's "
    "TensorFlow run runs this test"))
def test_strides_xla_ab(capsys):
    _script("cpu-strides-xla-ab", B=1, C=8, G=2, K=3, SIZES=(9,), STRIDES=(2,), SECONDS=0.01).main()
    lines = _lines(capsys)
    assert len(lines) == 2 and all(line.startswith("9 px, stride 2, ") and "stride phases" in line for line in lines)


@pytest.mark.skipif(tb.NAME != "torch", reason=(
    "cpu-torch-compile-ab.py times torch.compile, which exists on PyTorch only; tox's PyTorch run runs this "
    "test"))
def test_torch_compile_ab(capsys):
    _script("cpu-torch-compile-ab", CASES=TINY[:1], SECONDS=0.01).main("inference")
    (row,) = [json.loads(line) for line in _lines(capsys)]
    assert row["mode"] == "inference" and row["rounds"] >= 5
    assert {"eager_ms", "compiled_ms", "compiled_own_ms"} <= set(row)


@pytest.mark.skipif(tb.NAME != "torch", reason=(
    "cpu-torch-graphs-ab.py times torch.compile's graphs, which exist on PyTorch only; tox's PyTorch run runs "
    "this test"))
def test_torch_graphs_ab(capsys):
    # aot_eager: Dynamo's graphs without TorchInductor's code generation (2 minutes of it on CI's CPU). The
    # training step only: it has both of "before"'s kinds of break (the aggregation's lookup, and the batch
    # norm's tracked axes), and tracing the broken form takes 40 s a mode on CI's CPU.
    _script("cpu-torch-graphs-ab", CASES=[("shiftsum", 1, 8, 8, 2)], K=3, MODES=("training",), SECONDS=0.01,
            COMPILER="aot_eager").main()
    (row,) = [json.loads(line) for line in _lines(capsys)]
    assert row["mode"] == "training"
    # "before" breaks where the layer's graphs broke before 60f16b7 (the lookup, and 8 breaks at the batch
    # norm's axes: 9 graphs); "now" is one graph
    assert row["now_graphs"] == 1 and row["before_graphs"] == 9 and row["rounds"] >= 5


@pytest.mark.skipif(tb.NAME != "torch", reason=(
    "cpu-triton-call-ab.py times the Triton kernels' PyTorch calls; tox's PyTorch run runs this test"))
def test_triton_call_ab(capsys):
    from layers.aggregation import triton_kernels, triton_torch

    launch, aggregate = triton_kernels.launch, triton_torch.aggregate
    _script("cpu-triton-call-ab", CASES=[(1, 8, 8, 2)], SECONDS=0.01).main()
    rows = [json.loads(line) for line in _lines(capsys)]
    assert [row["mode"] for row in rows] == ["inference", "training", "layer inference", "layer training"]
    assert [row["launches"] for row in rows] == [1, 3, 1, 3]  # training: the forward and both gradients
    assert all(row["rounds"] >= 5 and row["before_us"] > 0 and row["now_us"] > 0 for row in rows)
    assert (triton_kernels.launch, triton_torch.aggregate) == (launch, aggregate)  # restored


@pytest.mark.skipif(tb.NAME != "torch", reason=(
    "cpu-pooling-ab.py times the pooling that changed on PyTorch only; tox's PyTorch run runs this test"))
def test_pooling_ab(capsys):
    _script("cpu-pooling-ab", CASES=[(1, 8, 4), (1, 9, 4)], SECONDS=0.01).main()
    lines = _lines(capsys)
    assert len(lines) == 8 and all(line.startswith("torch ") and "keras" in line and "layers.pooling" in line
                                   for line in lines)


def test_keras_pooling_check(capsys):
    _script("keras-pooling-check", CASES=[(9, 2), (8, 3)]).main()
    lines = _lines(capsys)
    assert len(lines) == 2 and all(line.startswith(f"{tb.NAME} ") and "largest difference" in line for line in lines)


@tb.BACKEND_INDEPENDENT
@pytest.mark.parametrize("arguments, message", [
    ([], "cpu-allocator-ab.sh takes the folder for the runs, then settings (keep, tcmalloc, jemalloc). "
         "Received: 0 arguments"),
    (["OUT", "keep", "mimalloc"], "--c-allocator takes system or keep or tcmalloc or jemalloc. "
                                  "Received: --c-allocator=mimalloc"),
])
def test_allocator_ab_refuses_bad_arguments_in_one_line(tmp_path, arguments, message):
    """The sweeps themselves take 10 minutes a setting: only the script's argument checks run here, before
    any sweep starts (nothing is written to the folder). Its settings are the sweep's --c-allocator
    choices, checked by bench.allocators."""
    arguments = [str(tmp_path / a) if a == "OUT" else a for a in arguments]
    path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))  # this `python`
    done = subprocess.run(["bash", str(RESULTS / "cpu-allocator-ab.sh"), *arguments], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**os.environ, "PATH": path})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [message]
    assert not any(tmp_path.iterdir())


def test_pass_pairing_separates_shared_from_own_noise():
    """cpu-pass-pairing.py: a slowdown that a whole process shares leaves the
    paired log ratio unmoved and spreads the unpaired one; a case's own noise
    spreads both."""
    import pandas as pd

    script = _script("cpu-pass-pairing")
    shared = [1.0, 1.3, 0.8]  # per process, the same for both cases
    work = {"backend": tb.NAME, "mode": "inference", "dtype": "float32", "resolution": 8, "channels": 8, "batch": 1,
            "kernel_size": 3, "stride": 1, "jit": False, "status": "ok"}
    rows = [{**work, "layer": "conv2d", "series": "conv2d", "pass_medians_s": str([2.0 * f for f in shared])},
            {**work, "layer": "involution", "series": "involution/shiftsum",
             "pass_medians_s": str([1.0 * f for f in shared])},
            {**work, "resolution": 16, "layer": "conv2d", "series": "conv2d", "pass_medians_s": "[2.0, 2.0, 2.0]"},
            {**work, "resolution": 16, "layer": "involution", "series": "involution/reference",
             "pass_medians_s": "[1.0, 1.3, 0.8]"}]
    out = script.spreads(pd.DataFrame(rows)).set_index("series")
    assert out.loc["involution/shiftsum", "sd_log_ratio_paired"] == 0
    assert out.loc["involution/shiftsum", "sd_log_ratio_unpaired"] > 0.2
    own = out.loc["involution/reference"]
    assert own["sd_log_ratio_paired"] == own["sd_log_ratio_unpaired"] > 0.2
    assert out["degrees_of_freedom"].tolist() == [2, 2]
