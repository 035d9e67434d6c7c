"""Loading run directories into the tidy table; bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from scipy import stats

from reports import load
from tests.reports.conftest import copy_run


def test_one_row_per_case_with_derived_columns(fixtures):
    loaded = load.load_runs([fixtures / "run_base"])
    t = loaded.table
    assert len(t) == 18 and not loaded.skipped
    assert set(t["series"]) == {"conv2d", "depthwise", "involution/shiftsum", "involution/reference"}
    row = t[t["case_id"] == "conv2d-keras-k7s1-32px-c64-b8-f32-inf-nojit"].iloc[0]
    assert row["latency_ms"] == pytest.approx(25.0) and row["peak_memory_mb"] == pytest.approx(20.0)
    assert len(loaded.rounds) == 18 * 20
    assert loaded.runs[0]["backend"] == "tensorflow"


def test_runs_merge(fixtures):
    loaded = load.load_runs([fixtures / "run_base", fixtures / "run_new"])
    assert len(loaded.table) == 36 and loaded.table["run_dir"].nunique() == 2


def test_runs_of_the_same_cases_in_one_setup_keep_their_own_series(fixtures, tmp_path):
    """Two runs of one sweep (two commits, two C allocators) are two series,
    each named by its run; shards of a sweep, and other backends or devices,
    merge as one."""
    t = load.load_runs([fixtures / "run_base", fixtures / "run_new"]).table
    assert dict(zip(t["run_dir"], t["variant"], strict=True)) == {
        str(fixtures / "run_base"): "run_base", str(fixtures / "run_new"): "run_new"}
    assert {"involution/shiftsum · run_base", "involution/shiftsum · run_new"} <= set(t["series"])
    t = load.load_runs([fixtures / "run_base", fixtures / "run_gpu"]).table  # another backend and device
    assert set(t["variant"]) == {""} and "involution/shiftsum · torch" in set(t["series"])
    lines = (fixtures / "run_base" / "results.jsonl").read_text().splitlines()
    for index in (0, 1):  # two shards: each case in one of them
        shard = tmp_path / f"shard{index}"
        shard.mkdir()
        shutil.copy(fixtures / "run_base" / "run.json", shard / "run.json")
        (shard / "results.jsonl").write_text("\n".join(lines[index::2]) + "\n")
    t = load.load_runs([tmp_path / "shard0", tmp_path / "shard1"]).table
    assert len(t) == len(lines) and set(t["variant"]) == {""}
    for parent in ("a", "b"):  # two run directories of one name: their paths tell them apart
        shutil.copytree(fixtures / "run_base", tmp_path / parent / "run")
    t = load.load_runs([tmp_path / "a" / "run", tmp_path / "b" / "run"]).table
    assert set(t["variant"]) == {str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")}


def test_a_run_of_the_same_cases_is_named_by_what_its_run_json_records_differently(fixtures, tmp_path):
    """Series names say what differs between the runs (commit, C allocator,
    package versions, settings), the run directory's name where that is
    nothing or does not tell two runs apart; runs linked by no shared case
    are named among themselves only."""
    base = {"git_commit": "a" * 40, "git_dirty": False, "c_allocator": "glibc 2.36 (libc.so.6), its defaults",
            "packages": {"keras": "3.15.1", "torch": "2.13.0"}, "environment": {"TRITON_CACHE_DIR": "/a/tmp"}}
    runs = [
        copy_run(fixtures / "run_base", tmp_path / "one", **base),
        copy_run(fixtures / "run_base", tmp_path / "two", **{**base, "git_commit": "b" * 40, "git_dirty": True,
                                                             "environment": {"TRITON_CACHE_DIR": "/b/tmp"}}),
        copy_run(fixtures / "run_base", tmp_path / "three", **{
            **base, "c_allocator": "libtcmalloc_minimal.so.4 (/usr/lib/libtcmalloc_minimal.so.4), its defaults",
            "packages": {"keras": "3.15.1"}, "environment": {"MALLOC_ARENA_MAX": "1"}}),
    ]
    t = load.load_runs(runs).table
    assert dict(zip(t["run_dir"], t["variant"], strict=True)) == {
        str(runs[0]): "commit aaaaaaaaaa; C allocator glibc 2.36, its defaults; torch 2.13.0; MALLOC_ARENA_MAX unset",
        str(runs[1]): "commit bbbbbbbbbb (modified); C allocator glibc 2.36, its defaults; torch 2.13.0; "
                      "MALLOC_ARENA_MAX unset",
        str(runs[2]): "commit aaaaaaaaaa; C allocator libtcmalloc_minimal.so.4, its defaults; torch not installed; "
                      "MALLOC_ARENA_MAX 1"}  # the cache folders are places, not settings
    assert "involution/shiftsum · commit bbbbbbbbbb (modified); C allocator glibc 2.36, its defaults; torch 2.13.0; " \
           "MALLOC_ARENA_MAX unset" in set(t["series"])
    # Two of three runs alike in all they record: the run directory's name tells them apart.
    copy_run(runs[0], tmp_path / "four")
    t = load.load_runs([runs[0], runs[1], tmp_path / "four"]).table
    assert dict(zip(t["run_dir"], t["variant"], strict=True)) == {
        str(runs[0]): "commit aaaaaaaaaa (one)", str(runs[1]): "commit bbbbbbbbbb (modified)",
        str(tmp_path / "four"): "commit aaaaaaaaaa (four)"}
    # Nothing recorded differs (or nothing recorded): the run directory's name.
    t = load.load_runs([runs[0], tmp_path / "four"]).table
    assert set(t["variant"]) == {"one", "four"}
    # A pair on TensorFlow and a pair on PyTorch (run_gpu's backend and device): each pair's names say what
    # differs within it, not what differs from the other pair.
    gpu = [copy_run(fixtures / "run_gpu", tmp_path / f"gpu{index}", git_commit=commit)
           for index, commit in enumerate(("c" * 40, "d" * 40))]
    t = load.load_runs([runs[0], runs[2], *gpu]).table
    assert dict(zip(t["run_dir"], t["variant"], strict=True)) == {
        str(runs[0]): "C allocator glibc 2.36, its defaults; torch 2.13.0; MALLOC_ARENA_MAX unset",
        str(runs[2]): "C allocator libtcmalloc_minimal.so.4, its defaults; torch not installed; MALLOC_ARENA_MAX 1",
        str(gpu[0]): "commit cccccccccc", str(gpu[1]): "commit dddddddddd"}


def test_broken_lines_are_skipped_and_listed(fixtures):
    loaded = load.load_runs([fixtures / "run_broken"])
    assert len(loaded.table) == 18
    assert len(loaded.skipped) == 3
    text = "\n".join(loaded.skipped)
    assert "results.jsonl:19: not a result row" in text
    assert "results.jsonl:20: schema version 2" in text
    assert "results.jsonl:21: not a complete JSON line" in text


@pytest.mark.parametrize("name, message", [
    ("run_empty", "no valid result rows (an empty run"),
    ("run_foreign", "no valid result rows (2 line(s) skipped; the first: "),
    ("no_such_run", "no such run directory"),
])
def test_unusable_input_names_the_path_and_the_fix(fixtures, name, message):
    with pytest.raises(load.ReportError) as info:
        load.load_runs([fixtures / name])
    text = str(info.value)
    assert name in text and message in text
    assert "; give the " in text and "\n" not in text  # what to pass instead, on one line


def test_a_file_or_a_foreign_folder(fixtures, tmp_path):
    with pytest.raises(load.ReportError, match="not a directory"):
        load.load_runs([fixtures / "run_base" / "run.json"])
    with pytest.raises(load.ReportError, match="not a benchmark run directory"):
        load.load_runs([tmp_path])


def test_a_run_in_which_no_case_finished(tmp_path):
    """run.json alone: the run names why (its not_run), not "not a run directory"."""
    (tmp_path / "run.json").write_text(json.dumps({"backend": "jax", "not_run": {"a reason": ["a", "b"]}}))
    with pytest.raises(load.ReportError) as info:
        load.load_runs([tmp_path])
    text = str(info.value)
    assert text.startswith(f"{tmp_path}: no case of this run finished") and "\n" not in text
    assert "2 case(s) its backend and device cannot run, listed by reason in run.json's not_run" in text
    (tmp_path / "run.json").write_text(json.dumps({"backend": "jax"}))  # interrupted before its first case
    with pytest.raises(load.ReportError, match="run.json lists no case its backend and device cannot run"):
        load.load_runs([tmp_path])


def test_seed_history(fixtures):
    loaded = load.load_runs([fixtures / "run_seed"])
    assert loaded.table.empty
    assert len(loaded.histories) == 6 and len(loaded.kernel_maps) == 1


def test_passes_make_one_row_per_case(fixtures):
    """Two passes (processes) of a case: one row, the median of the passes'
    medians, each pass's median kept for compare, the rounds pooled."""
    table = load.load_runs([fixtures / "cmp_base"]).table
    assert len(table) == 18 and table["case_id"].is_unique
    row = table.set_index("case_id").loc["conv2d-keras-k7s1-32px-c64-b8-f32-inf-nojit"]
    assert row["pass_medians_s"] == pytest.approx([0.025, 0.02525])
    assert row["median_s"] == pytest.approx(0.025125) and len(row["time_rounds"]) == 40
    assert row["peak_memory_bytes"] == pytest.approx(20e6) and row["status"] == "ok"


def test_intervals_of_cases_timed_in_several_processes_include_the_spread_between_them(fixtures):
    """cmp_base: each case's second process 1% slower than its first, so the
    spread of log medians between processes is log(1.01)/sqrt(2) in every
    series; a case's time (the mean of its two medians) gets the t interval
    of that spread over two processes, with a degree of freedom per case of
    the series (Conv2D: 4 cases)."""
    row = load.load_runs([fixtures / "cmp_base"]).table.set_index("case_id").loc[
        "conv2d-keras-k7s1-32px-c64-b8-f32-inf-nojit"]
    assert row["interval_basis"] == load.BETWEEN_PROCESSES and row["time_log_df"] == 4
    assert row["time_log_var"] == pytest.approx(math.log(1.01) ** 2 / 4)
    half = stats.t.ppf(0.975, 4) * math.log(1.01) / 2
    assert row["time_ms_ci_low"] == pytest.approx(25.125 * math.exp(-half))
    assert row["time_ms_ci_high"] == pytest.approx(25.125 * math.exp(half))


def test_one_process_keeps_the_interval_of_its_rounds(fixtures):
    table = load.load_runs([fixtures / "run_base"]).table
    assert (table["interval_basis"] == load.ONE_PROCESS).all() and table["time_log_var"].isna().all()
