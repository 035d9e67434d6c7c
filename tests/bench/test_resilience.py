"""Nothing is lost: a killed run keeps its finished cases and --resume
completes it without repeats; Ctrl-C keeps results and still writes the
report; shards split a sweep exactly; bad options say what is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import sweeps
from bench.cases import drop_reason
from tests import backend as tb
from tests.bench.conftest import ROOT, TINY, bench_command, bench_env, run_bench

# The run directory, resume, interrupt and option logic does not depend on the
# backend; each of these tests starts several subprocesses, so CI runs them once.
pytestmark = tb.BACKEND_INDEPENDENT


def _complete_rows(path: Path) -> list[dict]:
    rows = []
    for line in (path / "results.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(bench_command(*args), cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_rows(process: subprocess.Popen, path: Path, count: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        results = path / "results.jsonl"
        if results.exists() and len(results.read_text().splitlines()) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before {count} cases: {process.stdout.read()[-3000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no {count} finished cases within {timeout} s")


def _all_ids() -> set[str]:
    return {c.id for c in sweeps.load(str(TINY)).cases(tb.NAME, "cpu") if drop_reason(c, tb.NAME, "cpu") is None}


def test_killed_run_keeps_finished_cases_and_resume_completes_it(tmp_path):
    path = tmp_path / "run"
    process = _start("--sweep", str(TINY), "--run-dir", str(path), "--no-report")
    _wait_for_rows(process, path, 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    before = _complete_rows(path)
    assert len(before) >= 2
    assert all(row["status"] == "ok" for row in before)
    # A line cut by the kill (simulated here, whatever the kill hit).
    with open(path / "results.jsonl", "a") as f:
        f.write('{"schema": 1, "case_id": "involution-cut')
    dead = json.loads((path / ".lock").read_text())["pid"]  # the killed sweep's lock, left behind
    result = run_bench("--resume", str(path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"{len({r['case_id'] for r in before})} already finished" in result.stdout
    assert f"took over the run directory's lock from process {dead}, which is no longer running" in result.stdout
    after = _complete_rows(path)
    ids = [row["case_id"] for row in after]
    assert len(ids) == len(set(ids)), "a finished case ran again"
    assert set(ids) == _all_ids()
    assert [row["case_id"] for row in after[: len(before)]] == [row["case_id"] for row in before]
    meta = json.loads((path / "run.json").read_text())
    assert len(meta["sessions"]) == 2
    assert (path / "report.html").exists()
    document = json.loads((path / "benchmark.json").read_text())
    assert {b["params"]["case_id"] for b in document["benchmarks"]} == set(ids) - {r["case_id"] for r in before}


def test_ctrl_c_keeps_results_and_writes_the_report(tmp_path):
    path = tmp_path / "run"
    # Each case's rounds fill 3 s (no precision rule): the Ctrl-C sent after
    # the first row lands in the middle of the sweep, not after its end (the
    # tiny sweep's five cases can all finish within one poll).
    sweep = tmp_path / "slow.toml"
    sweep.write_text(TINY.read_text().replace("time_per_case = 0.02",
                                              "time_per_case = 3\nprecision = 0\nmax_rounds = 1000000"))
    process = _start("--sweep", str(sweep), "--run-dir", str(path))
    _wait_for_rows(process, path, 1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2, output[-3000:]  # pytest's "interrupted"
    rows = _complete_rows(path)
    assert rows and all(row["status"] == "ok" for row in rows)
    assert (path / "report.html").exists(), output[-3000:]
    assert "report:" in output
    assert f"resume with: pytest bench --benchmark-only --resume {path}" in output


def test_resume_refuses_another_backend(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    other = "jax" if tb.NAME != "jax" else "torch"
    (path / "run.json").write_text(json.dumps({"backend": other, "sweep": "smoke"}))
    result = run_bench("--resume", str(path))
    assert result.returncode == 4
    assert f"KERAS_BACKEND={other}" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_shards_collect_disjoint_slices_of_the_sweep():
    """The command line collects exactly shard_cases' slice (whose slices
    partition the sweep: tests/bench/test_cases.py). Output not captured
    (-s): the frameworks' start-up messages are still hidden."""
    from bench.session import shard_cases

    result = run_bench("--sweep", str(TINY), "--collect-only", "-q", "-s", "--shard=1/2")
    assert result.returncode == 0, result.stdout + result.stderr
    collected = {line.split("[", 1)[1].rstrip("]") for line in result.stdout.splitlines() if "test_case[" in line}
    cases = sweeps.load(str(TINY)).cases(tb.NAME, "cpu")
    assert collected == {c.id for c in shard_cases(cases, (1, 2))}
    for text in ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard"):
        assert text not in result.stdout + result.stderr


@pytest.mark.parametrize("args, message", [
    (["--shard", "5/2"], "Received: --shard=5/2"),
    (["--sweep", "nope"], "Received: --sweep=nope"),
    (["--bench-time", "-1"], "Received: --bench-time=-1"),
    (["--case-timeout", "0"], "Received: --case-timeout=0"),
    (["--precompile", "-1"], "Received: --precompile=-1"),
    (["--precompile-time", "0"], "Received: --precompile-time=0"),
    (["--bench-inject-crash", "("], "Received: --bench-inject-crash=("),
    (["-n", "2"], "Received: -n 2"),  # pytest-xdist, installed with the tests
    (["--dist", "load", "--tx", "2*popen"], "Received: --dist load"),
    (["--l2", "hot"], "Received: --l2=hot"),  # not argparse's usage text: bench.options.typed
    (["--passes", "x"], "Received: --passes=x"),
])
def test_bad_options_are_one_clear_line(args, message):
    result = run_bench(*args, "--collect-only", "-q")
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 4 and len(lines) == 1, lines
    assert lines[0].startswith("ERROR: ") and lines[0].endswith(message), lines


# -- a case that crashes or hangs costs that case only -------------------------------
CRASH = r"^depthwise-keras"
HANG = r"^involution-reference-k5"


def test_a_crash_and_a_hang_cost_their_cases_only(tmp_path):
    """The supervisor records a case that aborts its process as crashed and a
    case stuck in native code as timeout, resumes, and finishes the sweep
    (in a run directory whose missing parents it creates)."""
    path = tmp_path / "a" / "b" / "run"
    result = run_bench("--sweep", str(TINY), "--run-dir", str(path), "--no-report", "--case-timeout", "10",
                       f"--bench-inject-crash={CRASH}", f"--bench-inject-hang={HANG}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    rows = {row["case_id"]: row for row in _complete_rows(path)}
    assert set(rows) == _all_ids()
    crashed = next(row for case_id, row in rows.items() if case_id.startswith("depthwise-keras"))
    hung = next(row for case_id, row in rows.items() if case_id.startswith("involution-reference-k5"))
    assert crashed["status"] == "crashed" and "SIGABRT" in crashed["error"]
    assert hung["status"] == "timeout" and "10 s" in hung["error"] and 10 <= hung["wall_s"] < 60
    assert all(row["status"] == "ok" for row in rows.values() if row not in (crashed, hung))
    assert "crashed (killed by signal 6 (SIGABRT)); resuming the run (restart 1" in output
    assert "timeout (10 s); resuming the run (restart 2" in output
    assert not (path / "running.json").exists()


def test_resume_records_a_case_that_ended_its_process_twice(tmp_path):
    """Without the supervisor's verdict (the whole sweep was killed from
    outside), the case in flight runs once more; twice in flight at a death,
    it is recorded as crashed and not run again."""
    path = _run_dir_by_hand(tmp_path)
    victim = sorted(_all_ids())[0]
    record = {"case_id": victim, "pid": 1, "started": time.time() - 5, "timeout_s": 900, "attempt": 2}
    (path / "running.json").write_text(json.dumps(record))
    result = run_bench("--resume", str(path), "--no-report")
    assert result.returncode == 0, result.stdout[-2000:]
    assert f"{victim}: recorded with status crashed (the process ended 2 times while this case ran" in result.stdout
    rows = {row["case_id"]: row for row in _complete_rows(path)}
    assert rows[victim]["status"] == "crashed" and set(rows) == _all_ids()


def test_passes_of_a_selection_end_and_hand_the_run_directory_over(tmp_path):
    # Each pass runs in a fresh process; the previous one ended normally and
    # gave the directory up, so nothing is "taken over" from it.
    # One case of the tiny sweep selected with -k: the supervisor names each
    # pass to its child (with part of the sweep selected, a pass found from
    # the rows stayed "pass 1" for ever, and the sweep never ended).
    path = tmp_path / "run"
    result = run_bench("--sweep", str(TINY), "--run-dir", str(path), "--passes", "2", "--no-report",
                       "-k", "conv2d", timeout=180)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert "pass 1 of 2 done; the next starts in a fresh process" in text
    assert "took over the run directory's lock" not in text
    rows = _complete_rows(path)
    (conv,) = [case_id for case_id in _all_ids() if case_id.startswith("conv2d-")]
    assert sorted((row["case_id"], row["pass"]) for row in rows) == [(conv, 1), (conv, 2)]
    assert (path / ".lock").read_text() == ""  # given up at the end of the last pass too


def _run_dir_by_hand(tmp_path) -> Path:
    """A run directory as a killed session leaves it: run.json, no rows yet."""
    path = tmp_path / "run"
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"schema": 1, "backend": tb.NAME, "sweep": "tiny",
                                               "sweep_source": str(TINY), "sessions": []}))
    return path


def test_one_writer_per_run_directory(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, sys, time\n"
        f"f = open({str(path / '.lock')!r}, 'a+')\n"
        "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
        "f.write(json.dumps({'pid': os.getpid(), 'host': 'here', 'started': 'now'})); f.flush()\n"
        "print('locked', flush=True); time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_bench("--sweep", str(TINY), "--run-dir", str(path), "--no-report")
        text = result.stdout + result.stderr
        assert result.returncode == 4, text[-2000:]
        assert f"--run-dir {path} is in use by process {holder.pid} on here" in text
        assert "Traceback" not in text
    finally:
        holder.kill()
        holder.wait()
    # A stale lock (its process gone) is taken over: see the killed-run test above.


@pytest.mark.parametrize("where", ["/proc/involution-bench/run", "/dev/null/run"])
def test_a_run_dir_that_cannot_be_created_is_one_line(where):
    result = run_bench("--sweep", str(TINY), "--run-dir", where, "--no-report")
    text = result.stdout + result.stderr
    assert result.returncode == 4, text[-2000:]
    assert f"--run-dir {where}: cannot be created or written" in text and f"Received: --run-dir={where}" in text
    assert "Traceback" not in text and "INTERNALERROR" not in text


def test_a_full_disk_stops_with_one_line_and_keeps_the_rows(tmp_path):
    """results.jsonl cannot be appended to (ENOSPC, made by a sitecustomize
    in the sweep's processes): one line naming the file, a non-zero exit, no
    traceback, and the rows written before stay."""
    path = _run_dir_by_hand(tmp_path)
    before = json.dumps({"schema": 1, "case_id": "a-finished-case", "layer": "conv2d", "implementation": "keras",
                         "status": "ok"}) + "\n"
    (path / "results.jsonl").write_text(before)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import builtins, errno\n"
        "_open = builtins.open\n"
        "def full(file, mode='r', *args, **kwargs):\n"
        "    if str(file).endswith('results.jsonl') and 'a' in mode:\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return _open(file, mode, *args, **kwargs)\n"
        "builtins.open = full\n")
    env = bench_env()
    env["PYTHONPATH"] = str(hook) + os.pathsep + env["PYTHONPATH"]
    result = subprocess.run(bench_command("--resume", str(path)), cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{path / 'results.jsonl'}: the case's row could not be written (No space left on device)" in text
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert (path / "results.jsonl").read_text() == before
    assert not (path / "running.json").exists()
