"""Fixtures for the benchmark's end-to-end tests: real `pytest bench` runs in
subprocesses (KERAS_BACKEND is fixed per process)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).parent / "fixtures" / "tiny.toml"
# The case whose failure the smoke run injects, and the cases it profiles.
INJECTED = r"depthwise-keras-k3s1-8px-c8-b2-f32-inf-jit$"
PROFILED = r"^involution-shiftsum-k3s1g2r2-8px"


@dataclass
class Run:
    returncode: int
    output: str
    path: Path

    @property
    def rows(self) -> list[dict]:
        lines = (self.path / "results.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def bench_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-p", "no:cacheprovider", "-rs", *args]


def bench_env() -> dict:
    # pytest-xdist's worker variables (tox runs the tests in two workers) would
    # tell the sweep's pytest-benchmark that it runs under xdist too, and it
    # then refuses --benchmark-only.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(bench_command(*args), cwd=ROOT, env=bench_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Run:
    """One `pytest bench --sweep smoke` run for the whole session.

    tox runs the tests in two pytest-xdist workers, each with a session of its
    own: the first worker to need the run makes it, holding a lock on the
    workers' common temporary folder, and the other reads its record there."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "smoke"
    folder.mkdir(exist_ok=True)
    record = folder / "smoke_run.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.exists():
            path = folder / "run"
            result = run_bench("--sweep", "smoke", "--run-dir", str(path), f"--bench-inject-failure={INJECTED}",
                               f"--profile={PROFILED}")
            record.write_text(json.dumps({"returncode": result.returncode, "output": result.stdout + result.stderr,
                                          "path": str(path)}))
        fields = json.loads(record.read_text())
    return Run(fields["returncode"], fields["output"], Path(fields["path"]))
