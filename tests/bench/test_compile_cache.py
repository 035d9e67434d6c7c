"""`--precompile N` and `--compile-cache DIR`: the compilers' persistent
caches (JAX's XLA cache; Triton's and TorchInductor's on PyTorch) filled ahead
by worker processes, and rows that say where their compiled code came from."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from bench import compile_cache, sweeps
from tests import backend as tb
from tests.bench.conftest import TINY, run_bench


def test_verdict_names_where_the_executables_came_from():
    assert compile_cache.verdict((3, 1), (5, 1)) == "hit"
    assert compile_cache.verdict((3, 1), (5, 2)) == "miss"  # one compiled: the time is a compilation's
    assert compile_cache.verdict((3, 1), (3, 1)) == "none"


@pytest.mark.skipif(tb.NAME != "jax", reason="--compile-cache runs on JAX and PyTorch; checked once, on JAX")
def test_a_compile_cache_that_cannot_be_created_is_one_line(tmp_path):
    where = "/dev/null/cache"
    result = run_bench("--sweep", str(TINY), "--compile-cache", where, "--run-dir", str(tmp_path / "run"),
                       "--no-report")
    text = result.stdout + result.stderr
    assert result.returncode == 4, text[-2000:]
    assert f"--compile-cache {where}: cannot be created or written" in text
    assert f"Received: --compile-cache={where}" in text
    assert "Traceback" not in text and "INTERNALERROR" not in text


@pytest.mark.skipif(tb.NAME != "jax", reason="JAX's persistent compilation cache")
def test_precompiled_cases_load_their_executables_from_the_cache(tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    result = run_bench("--sweep", str(TINY), "--precompile", "2", "--compile-cache", str(cache),
                       "--run-dir", str(run), "--no-report")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "precompile: 5 of 5 cases compiled into the cache by 2 processes" in output
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {row["status"] for row in rows} == {"ok"}
    # Compiled by the workers with the sweep's settings: every step is a cache hit.
    assert {row["compile_cache"] for row in rows} == {"hit"}, [(r["case_id"], r["compile_cache"]) for r in rows]
    header = json.loads((run / "run.json").read_text())["compile_cache"]
    assert f"compilation cache in {cache.resolve() / 'jax'}" in header
    assert any(cache.iterdir())
    # The report's table of all results says it too.
    from reports import tables
    from reports.load import load_runs

    assert set(tables.all_results(load_runs([run]).table)["compile cache"]) == {"hit"}


@pytest.mark.skipif(tb.NAME != "jax", reason="the workers' deadline does not depend on the backend")
def test_precompile_stops_its_workers_at_its_time(tmp_path):
    """--precompile-time: the workers still compiling are stopped, so that a
    sweep run under an outside time limit starts timing (it then compiles the
    cases the workers did not reach)."""
    cases = sweeps.load(str(TINY)).cases(tb.NAME, "cpu")[:2]
    started = time.perf_counter()
    line = compile_cache.precompile(cases, 2, tmp_path / "cache", tmp_path, timeout_s=0.5, tf32=False)
    assert time.perf_counter() - started < 30
    assert line.startswith("precompile: 0 of 2 cases compiled into the cache by 2 processes in ")
    assert line.endswith("; 2 process(es) stopped after 0.5 s")
    assert (tmp_path / compile_cache.SUMMARY_FILE).read_text() == line + "\n"


@pytest.mark.skipif(tb.NAME == "tensorflow", reason="JAX's and TorchInductor's persistent caches")
def test_a_cold_cache_is_a_miss(tmp_path):
    """A case whose step compiles with nothing in the cache says miss: a
    jitted JAX case, and on PyTorch a torch.compile one (TorchInductor)."""
    sweep, case = TINY, "shiftsum"
    if tb.NAME == "torch":
        sweep, case = tmp_path / "compiled.toml", "conv2d"
        sweep.write_text(TORCH_SWEEP)
    result = run_bench("--sweep", str(sweep), "--compile-cache", str(tmp_path / "cache"), "--run-dir",
                       str(tmp_path / "run"), "--no-report", "-k", case)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    row = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[0])
    assert row["compile_cache"] == "miss"


@pytest.mark.skipif(tb.NAME != "jax", reason="jax-triton calls Triton kernels from JAX")
@pytest.mark.skipif(importlib.util.find_spec("jax_triton") is None, reason="jax-triton is not installed")
def test_jax_triton_kernels_come_back_from_the_disk_cache(tmp_path, monkeypatch):
    """jax-triton compiles while lowering and keeps kernels in memory only;
    with a cache directory a second process (here: an emptied in-memory
    cache) loads the PTX instead of compiling it."""
    from jax import monitoring

    from bench import kernel_resources as kr
    from layers.aggregation import triton_jax

    with kr.jax_triton_without_gpu():  # it imports only with the stand-in bindings in place
        from jax_triton import triton_lib
    events = []
    monitoring.register_event_listener(lambda event, **_: events.append(event))
    monkeypatch.setattr(triton_jax, "_kernel_cache", None)
    triton_jax.cache_kernels(tmp_path)
    monkeypatch.setattr(triton_lib, "_COMPILED_KERNEL_CACHE", {})  # nothing compiled by earlier tests
    case = kr.KernelCase("triton", 9, 48, 3, kernel_size=3, stride=2, mode="training")
    first = kr.jax_triton_lowering(case)["calls"]
    stored = sorted(tmp_path.glob("*.json"))
    assert len(stored) == sum(call.configs for call in first) == events.count(triton_jax.CACHE_MISS_EVENT)

    def no_compiler(*args):
        raise AssertionError("compiled again: the disk cache was not used")

    monkeypatch.setattr(triton_lib, "_COMPILED_KERNEL_CACHE", {})
    monkeypatch.setattr(triton_lib, "compile_ttir_to_ptx_inplace", no_compiler)
    again = kr.jax_triton_lowering(case)["calls"]
    assert again == first
    assert events.count(triton_jax.CACHE_HIT_EVENT) == len(stored)


# torch.compile'd (jit) and eager cases on PyTorch: only the first compile.
TORCH_SWEEP = """
description = "torch.compile and eager cases, for --precompile on PyTorch."
time_per_case = 0.02
min_rounds = 3

[defaults]
layer = "conv2d"
implementation = "keras"
kernel_size = 3
stride = 1
groups = 2
reduction_ratio = 2
resolution = 8
channels = 8
batch = 2
dtype = "float32"
mode = "inference"
jit = true

[[grid]]
layer = "conv2d"

[[grid]]
layer = "involution"
implementation = "shiftsum"
jit = false
"""


@pytest.mark.skipif(tb.NAME != "torch", reason="TorchInductor's and Triton's caches")
def test_precompile_on_pytorch_fills_the_inductor_cache(tmp_path):
    sweep, cache, run = tmp_path / "compiled.toml", tmp_path / "cache", tmp_path / "run"
    sweep.write_text(TORCH_SWEEP)
    result = run_bench("--sweep", str(sweep), "--precompile", "2", "--compile-cache", str(cache),
                       "--run-dir", str(run), "--no-report")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # The eager shift-sum compiles nothing and is left out. (Triton's kernels
    # are fused implementations, timed on GPUs only: on a CPU they would run
    # in Triton's interpreter, which compiles nothing.)
    assert "precompile: 1 of 1 cases compiled into the cache by 2 processes" in output
    rows = {json.loads(line)["case_id"]: json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()}
    assert {row["status"] for row in rows.values()} == {"ok"}, rows
    verdicts = {case_id.split("-")[1]: row["compile_cache"] for case_id, row in rows.items()}
    assert verdicts == {"keras": "hit", "shiftsum": "none"}, verdicts
    assert any((cache / "inductor").iterdir())
    header = json.loads((run / "run.json").read_text())["compile_cache"]
    assert str(cache.resolve() / "inductor") in header


@pytest.mark.skipif(tb.NAME != "tensorflow", reason="the refusal is checked on the backend without a cache")
def test_precompile_on_tensorflow_is_refused_in_one_line():
    result = run_bench("--sweep", str(TINY), "--precompile", "2", "--collect-only", "-q")
    text = result.stdout + result.stderr
    assert result.returncode == 4 and "Received: --precompile=2 with KERAS_BACKEND=tensorflow" in text
    assert "Traceback" not in text
