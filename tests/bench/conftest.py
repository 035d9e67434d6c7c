"""Fixtures for the benchmark's end-to-end tests: real `pytest bench` runs in
subprocesses (KERAS_BACKEND is fixed per process)."""

from __future__ import annotations

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
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(bench_command(*args), cwd=ROOT, env=bench_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Run:
    path = tmp_path_factory.mktemp("smoke") / "run"
    result = run_bench("--sweep", "smoke", "--run-dir", str(path), f"--bench-inject-failure={INJECTED}",
                       f"--profile={PROFILED}")
    return Run(result.returncode, result.stdout + result.stderr, path)
