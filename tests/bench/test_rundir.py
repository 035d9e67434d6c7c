"""The run directory's lock: one writer at a time, given up at a normal end,
taken over (and named) after a crash."""

from __future__ import annotations

import json
import os

import pytest

from bench.rundir import RunDir, RunDirError


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
