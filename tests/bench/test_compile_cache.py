"""`--precompile N` and `--compile-cache DIR`: JAX's persistent compilation
cache filled ahead by worker processes, and rows that say where their
executables came from."""

from __future__ import annotations

import json

import pytest

from bench import compile_cache
from tests import backend as tb
from tests.bench.conftest import TINY, run_bench


def test_verdict_names_where_the_executables_came_from():
    assert compile_cache.verdict((3, 1), (5, 1)) == "hit"
    assert compile_cache.verdict((3, 1), (5, 2)) == "miss"  # one compiled: the time is a compilation's
    assert compile_cache.verdict((3, 1), (3, 1)) == "none"


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
    assert json.loads((run / "run.json").read_text())["compile_cache"].endswith(str(cache))
    assert any(cache.iterdir())
    # The report's table of all results says it too.
    from reports import tables
    from reports.load import load_runs

    assert set(tables.all_results(load_runs([run]).table)["compile cache"]) == {"hit"}


@pytest.mark.skipif(tb.NAME != "jax", reason="JAX's persistent compilation cache")
def test_a_cold_cache_is_a_miss(tmp_path):
    result = run_bench("--sweep", str(TINY), "--compile-cache", str(tmp_path / "cache"), "--run-dir",
                       str(tmp_path / "run"), "--no-report", "-k", "shiftsum")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    row = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[0])
    assert row["compile_cache"] == "miss"


@pytest.mark.skipif(tb.NAME != "torch", reason="the refusal is checked on one backend without the cache")
def test_precompile_without_jax_is_refused_in_one_line():
    result = run_bench("--sweep", str(TINY), "--precompile", "2", "--collect-only", "-q")
    text = result.stdout + result.stderr
    assert result.returncode == 4 and "Received: --precompile=2 with KERAS_BACKEND=torch" in text
    assert "Traceback" not in text
