"""Nothing is lost: a killed run keeps its finished cases and --resume
completes it without repeats; Ctrl-C keeps results and still writes the
report; shards split a sweep exactly; bad options say what is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench import sweeps
from bench.cases import drop_reason
from tests import backend as tb
from tests.bench.conftest import ROOT, TINY, bench_command, bench_env, run_bench

# The run directory, resume, interrupt and option logic does not depend on the
# backend; each of these tests starts several subprocesses, so CI runs them once.
pytestmark = pytest.mark.skipif(tb.NAME != "tensorflow", reason="backend-independent harness logic, "
                                "tested in the tensorflow environment")


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
    result = run_bench("--resume", str(path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"{len({r['case_id'] for r in before})} already finished" in result.stdout
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
    process = _start("--sweep", str(TINY), "--run-dir", str(path))
    _wait_for_rows(process, path, 1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2, output[-3000:]  # pytest's "interrupted"
    rows = _complete_rows(path)
    assert rows and all(row["status"] == "ok" for row in rows)
    assert (path / "report.html").exists(), output[-3000:]
    assert "report:" in output


def test_resume_refuses_another_backend(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    other = "jax" if tb.NAME != "jax" else "torch"
    (path / "run.json").write_text(json.dumps({"backend": other, "sweep": "smoke"}))
    result = run_bench("--resume", str(path))
    assert result.returncode == 4
    assert f"KERAS_BACKEND={other}" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def _collected(*args: str) -> set[str]:
    result = run_bench("--sweep", str(TINY), "--collect-only", "-q", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return {line.split("[", 1)[1].rstrip("]") for line in result.stdout.splitlines() if "test_case[" in line}


def test_shards_collect_disjoint_slices_of_the_sweep():
    whole = {c.id for c in sweeps.load(str(TINY)).cases(tb.NAME, "cpu")}
    parts = [_collected(f"--shard={i}/2") for i in range(2)]
    assert parts[0] | parts[1] == whole
    assert not parts[0] & parts[1]


@pytest.mark.parametrize("args, message", [
    (["--shard", "5/2"], "Received: --shard=5/2"),
    (["--sweep", "nope"], "Received: --sweep=nope"),
    (["--bench-time", "-1"], "Received: --bench-time=-1"),
    (["--l2", "cold"], "Received: --l2=cold"),
])
def test_bad_options_are_one_clear_line(args, message):
    result = run_bench(*args, "--collect-only", "-q")
    text = result.stdout + result.stderr
    assert result.returncode == 4 and message in text
    assert "Traceback" not in text
