"""The run directory's lock: one writer at a time, given up at a normal end,
taken over (and named) after a crash; output folders checked before any work."""

from __future__ import annotations

import json
import os

import pytest

from bench.rundir import RUNS, RunDir, RunDirError, default_path, parse_stamp, writable_file, writable_folder


def test_a_directory_given_up_normally_has_no_holder_to_take_over(tmp_path):
    first = RunDir(tmp_path / "run")
    assert first.lock() is None
    assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()
    first.unlock()
    assert (tmp_path / "run" / ".lock").read_text() == ""
    second = RunDir(tmp_path / "run")
    assert second.lock() is None
    second.unlock()
    second.unlock()  # twice is harmless


def test_a_dead_holder_is_named_when_its_lock_is_taken_over(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    # As a killed process leaves it: its record, and no flock (the system released it).
    (path / ".lock").write_text(json.dumps({"pid": 999_999_999, "host": "there", "started": "then"}))
    run_dir = RunDir(path)
    assert run_dir.lock() == 999_999_999
    run_dir.unlock()


def test_a_live_holder_is_a_one_line_error(tmp_path):
    holder = RunDir(tmp_path / "run")
    holder.lock()
    try:
        with pytest.raises(RunDirError, match=r"is in use by process \d+ on .*: wait for it to end"):
            RunDir(tmp_path / "run").check_free()
    finally:
        holder.unlock()
    RunDir(tmp_path / "run").check_free()  # free again


def test_output_folders_are_made_or_refused_in_one_line(tmp_path):
    assert writable_folder(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())  # the probe is gone
    assert writable_file(tmp_path / "c" / "r.html", "-o") == tmp_path / "c" / "r.html"
    assert (tmp_path / "c").is_dir() and not (tmp_path / "c" / "r.html").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunDirError) as info:
        writable_folder(blocker / "out", "--out")
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"--out {blocker / 'out'}: cannot be created or written (")
    assert text.endswith(f"choose a directory you can write to. Received: --out={blocker / 'out'}")
    with pytest.raises(RunDirError, match=r"choose a file you can write to\. Received: -o=.*a-file/r\.html$"):
        writable_file(blocker / "r.html", "-o")


def test_the_default_run_directory_is_under_reports_runs_with_a_time_stamp(tmp_path):
    path = default_path(tmp_path, "jax-cpu")
    assert path.parent == tmp_path / "reports" / "runs" == tmp_path / RUNS
    stamp, label = path.name.split("-", 1)
    assert parse_stamp(stamp) is not None
    assert label == "jax-cpu"
