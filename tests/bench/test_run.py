"""The smoke sweep end to end: rows, fields, files, summary and report."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from bench import sweeps
from bench.cases import drop_reason, not_run
from bench.rundir import EXTRA_INFO
from bench.session import MAX_STORED_ROUNDS
from tests import backend as tb
from tests.bench.conftest import INJECTED, TINY, run_bench


def _runnable():
    cases = sweeps.load("smoke").cases(tb.NAME, "cpu")
    return {c.id for c in cases if drop_reason(c, tb.NAME, "cpu") is None}


def test_exit_code_and_summary(smoke_run):
    assert smoke_run.returncode == 0, smoke_run.output[-4000:]
    out = smoke_run.output
    assert "involution-bench:" in out and "wall time" in out and "per-case overhead" in out
    assert "harness cost per round" in out
    assert f"report: {smoke_run.path / 'report.html'}" in out
    assert (smoke_run.path / "report.html").stat().st_size > 10_000


def test_the_report_sets_the_involution_network_against_its_counterpart(smoke_run):
    from reports import load, tables

    pairs = tables.model_pairs(load.load_runs([smoke_run.path]).table)
    assert pairs[["layer", "counterpart", "mode"]].values.tolist() == [["seed_involution", "seed_conv", "inference"]]
    (pair,) = pairs.to_dict("records")
    assert pair["time_ratio"] > 0 and pair["time_ratio_low"] <= pair["time_ratio"] <= pair["time_ratio_high"]
    assert pair["params_ratio"] == pytest.approx((13_074 + 6) / 319_178)  # the example's counts (docs/SOURCES.md)
    text = (smoke_run.path / "report.html").read_text()
    networks = text[text.index('id="models"'):text.index('id="results"')]
    assert "against its convolution counterpart" in networks
    assert "Peak memory measured by " in networks  # how, as for the layers' memory figure


def test_one_row_per_runnable_case(smoke_run):
    ids = [row["case_id"] for row in smoke_run.rows]
    assert sorted(ids) == sorted(_runnable())


def test_injected_failure_is_a_row_and_the_sweep_goes_on(smoke_run):
    rows = {row["case_id"]: row for row in smoke_run.rows}
    failed = [i for i in rows if re.search(INJECTED, i)]
    assert len(failed) == 1
    assert rows[failed[0]]["status"] == "error" and "injected" in rows[failed[0]]["error"]
    assert all(row["status"] == "ok" for i, row in rows.items() if i not in failed), [
        (i, r["error"]) for i, r in rows.items() if r["status"] != "ok"]
    assert f"{failed[0]}: recorded with status error" in smoke_run.output


def test_dropped_cases_are_reported_with_a_reason(smoke_run):
    """Each reason once, with its count (pytest groups equal skip reasons), in
    the summary, and every dropped case by id in run.json (which the report reads)."""
    cases = sweeps.load("smoke").cases(tb.NAME, "cpu")
    dropped = not_run([(c, drop_reason(c, tb.NAME, "cpu")) for c in cases])
    if tb.NAME in ("jax", "torch"):
        assert dropped, "the fused kernel must be listed as dropped on a CPU"
    for reason, ids in dropped.items():
        assert re.search(rf"SKIPPED \[{len(ids)}\] bench/test_sweep.py: {re.escape(reason)}", smoke_run.output)
    meta = json.loads((smoke_run.path / "run.json").read_text())
    assert meta["not_run"] == dropped
    count = sum(map(len, dropped.values()))
    assert (f"not run on this backend and device: {count} of the sweep's {len(cases)} cases" in smoke_run.output
            ) == (count > 0)


@tb.BACKEND_INDEPENDENT
def test_a_sweep_whose_cases_all_cannot_run_says_so(tmp_path):
    """Groups that do not divide the channels: no backend runs these cases.
    The run ends normally, with nothing written but run.json."""
    sweep = tmp_path / "undividable.toml"
    sweep.write_text(TINY.read_text().replace("groups = 2", "groups = 3").replace(
        'layer = ["involution", "conv2d", "depthwise"]', 'kernel_size = [3, 5]'))
    path = tmp_path / "run"
    result = run_bench("--sweep", str(sweep), "--run-dir", str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    cases = sweeps.load(str(sweep)).cases(tb.NAME, "cpu")
    reason = "groups=3 does not divide channels=8"
    assert {drop_reason(c, tb.NAME, "cpu") for c in cases} == {reason}
    assert f"SKIPPED [{len(cases)}] bench/test_sweep.py: {reason}" in output
    assert f"not run on this backend and device: {len(cases)} of the sweep's {len(cases)} cases" in output
    assert "results: none (no case ran)" in output and "report:" not in output
    meta = json.loads((path / "run.json").read_text())
    assert list(meta["not_run"]) == [reason] and sorted(meta["not_run"][reason]) == sorted(c.id for c in cases)
    assert not (path / "results.jsonl").exists() and not (path / "report.html").exists()


def test_every_field_present_and_plausible(smoke_run):
    for row in smoke_run.rows:
        if row["status"] != "ok":
            continue
        for key in EXTRA_INFO + ("median_s", "rounds", "rounds_s", "wall_s", "overhead_s"):
            assert key in row, (row["case_id"], key)
        # No datasheet peaks for a CPU: the fractions are recorded as unknown.
        assert row["flops_fraction"] is None and row["bandwidth_fraction"] is None
        assert row["backend"] == tb.NAME and row["device"] == "cpu"
        assert row["params"] > 0 and row["trainable_params"] > 0 and row["macs"] > 0
        assert row["flops"] == 2 * row["macs"] * (3 if row["mode"] == "training" else 1)
        assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["rounds"] >= 3 and len(row["rounds_s"]) == min(row["rounds"], MAX_STORED_ROUNDS)
        assert abs(row["throughput"] - row["batch"] / row["median_s"]) < 1e-6 * row["throughput"]
        assert row["compile_seconds"] >= 0 and row["warmup_calls"] >= 3
        assert row["compile_cache"] == "off"  # no --compile-cache, no --precompile
        assert row["peak_memory_bytes"] > 0 and "memray" in row["peak_memory_source"]
        assert row["flops_measured"] > 0 and row["flops_measured_source"]
        assert "TF32 off" in row["precision"] or "highest" in row["precision"]
        if row["kind"] == "layer":
            assert row["bytes_min"] > 0 and row["gbytes_per_s"] > 0
        assert row["implementation_resolved"] != "auto"
        assert row["counterpart"] == {"seed_involution": "seed_conv"}.get(row["layer"])  # the registry's
        # No GPU: no device clock, no flush, no NVML, each with its reason.
        assert row["device_median_s"] is None and row["device_q1_s"] is None and row["device_q3_s"] is None
        assert row["device_time_source"].startswith("none: a CPU run") and row["l2"] == "warm"
        assert row["l2_flush_bytes"] is None and row["rates_from"] == "latency"
        assert all(row[f] is None for f in ("gpu_sm_clock_mhz", "gpu_temperature_c", "gpu_power_w", "throttled",
                                            "throttle_reasons"))
        assert row["gpu_conditions_source"].startswith("none: a CPU run")
        assert row["triton_tiles_tuned"] is None and row["triton_tiles_source"].startswith("none: ")
        assert row["stopped_by"] in ("precision", "time", "rounds")


def test_benchmark_json_is_pytest_benchmarks_format(smoke_run):
    document = json.loads((smoke_run.path / "benchmark.json").read_text())
    info = document["machine_info"]["involution_bench"]
    assert info["backend"] == tb.NAME and "keras" in info and info["precision"]
    assert info["cpu"] and info["cpu_count"] >= 1
    ok = {row["case_id"] for row in smoke_run.rows if row["status"] == "ok"}
    names = {b["params"]["case_id"] for b in document["benchmarks"]}
    assert ok <= names
    for bench in document["benchmarks"]:
        extra = bench["extra_info"]
        assert extra["case_id"] == bench["params"]["case_id"]
        assert all(v is None or isinstance(v, (int, float, str, bool)) for v in extra.values())
        for key in ("device_median_s", "device_time_source", "l2", "gpu_conditions_source", "throttled"):
            assert key in extra, key  # null on a CPU, but there
        assert bench["stats"]["median"] > 0
    compare = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(smoke_run.path /
                                                                                       "benchmark.json")],
                             capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0, compare.stderr
    assert "test_case" in compare.stdout


def test_results_csv_carries_the_timing_fields(smoke_run):
    import pandas as pd

    csv = pd.read_csv(smoke_run.path / "results.csv")
    assert {"device_ms", "time_ms", "time_basis", "l2", "device_time_source", "stopped_by",
            "gpu_conditions_source", "throttled"} <= set(csv.columns)
    ok = csv[csv["status"] == "ok"]
    assert (ok["time_basis"] == "latency").all() and (ok["time_ms"] == ok["latency_ms"]).all()


def test_run_json_describes_the_run(smoke_run):
    meta = json.loads((smoke_run.path / "run.json").read_text())
    assert meta["backend"] == tb.NAME and meta["sweep"] == "smoke" and meta["precision"]
    assert meta["versions"]["keras"]
    assert meta["l2"] == "warm" and meta["device_time_source"].startswith("none: a CPU run")
    assert meta["precision_target"] == 0.02 and meta["time_per_case"] > 0
