"""Profiler traces of the smoke run, read back by a real TensorBoard server
(TensorFlow and JAX) or parsed as Chrome trace JSON (PyTorch)."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from layers.involution import STAGES  # the ranges of an unfused layer
from tests import backend as tb
from tests.bench.conftest import PROFILED, ROOT


def _profiled(smoke_run):
    rows = [row for row in smoke_run.rows if row.get("trace_dir")]
    assert rows, "the smoke run profiled no case"
    return rows


def test_profiled_rows_have_top_operations(smoke_run):
    import re

    for row in _profiled(smoke_run):
        assert re.search(PROFILED, row["case_id"])
        assert row["top_ops"] and row["top_ops_source"]
        assert all(op["self_time_us"] >= 0 and op["operation"] for op in row["top_ops"])
        assert Path(row["trace_dir"]).is_dir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30.0) -> bytes:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
        return gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body


@pytest.fixture(scope="module")
def tensorboard(smoke_run):
    if tb.NAME == "torch":
        pytest.skip("TensorBoard's profile plugin cannot read PyTorch traces (tested as trace JSON below)")
    logdir = smoke_run.path / "traces"
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port",
         str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"TensorBoard exited: {process.stdout.read()[-3000:]}")
        try:
            _get(base + "/data/plugins_listing", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("TensorBoard did not answer within 120 s")
    yield base
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_xplane_files_in_tensorboard_layout(smoke_run):
    if tb.NAME == "torch":
        pytest.skip("PyTorch writes Chrome trace JSON")
    for row in _profiled(smoke_run):
        session = smoke_run.path / "traces" / "plugins" / "profile" / row["case_id"]
        files = list(session.glob("*.xplane.pb"))
        assert files and all(f.stat().st_size > 0 for f in files)


def test_tensorboard_serves_the_traces_with_stage_names(smoke_run, tensorboard):
    profile = tensorboard + "/data/plugin/profile"
    runs = json.loads(_get(profile + "/runs"))
    expected = {row["case_id"] for row in _profiled(smoke_run)}
    assert expected <= set(runs), runs
    run = sorted(expected)[0]
    tools = json.loads(_get(profile + "/run_tools?" + urllib.parse.urlencode({"run": run})))
    assert "trace_viewer@" in tools or "trace_viewer" in tools
    hosts = json.loads(_get(profile + "/hosts?" + urllib.parse.urlencode({"run": run, "tag": "trace_viewer@"})))
    host = hosts[0]["hostname"] if isinstance(hosts[0], dict) else hosts[0]
    data = _get(profile + "/data?" + urllib.parse.urlencode({"run": run, "tag": "trace_viewer@", "host": host}),
                timeout=120)
    trace = json.loads(data)
    assert trace["traceEvents"]
    text = data.decode()
    for stage in STAGES:
        assert stage in text, stage


def test_torch_trace_is_chrome_json(smoke_run):
    if tb.NAME != "torch":
        pytest.skip("TensorFlow and JAX write xplane sessions")
    for row in _profiled(smoke_run):
        path = Path(row["trace_dir"]) / "trace.json"
        trace = json.loads(path.read_text())
        names = {event.get("name") for event in trace["traceEvents"]}
        assert set(STAGES) <= names


def test_profiling_happens_after_the_timed_rounds(tmp_path, monkeypatch):
    """The capture runs only once the timer's rounds are done, so traced
    steps never land in the timed rounds."""
    from bench import profiling, timing
    from bench.cases import Case
    from bench.session import BenchSession, Options

    events = []
    measure = timing.Timer.measure

    def timed(self, run, estimate):
        result = measure(self, run, estimate)
        events.append("timed")
        return result

    class FakeBenchmark:
        enabled = True
        extra_info: dict = {}
        _mode = None
        rounds: list = []

        def _make_stats(self, iterations):
            return type("Stats", (), {"update": lambda _, value: self.rounds.append(value)})()

    def fake_capture(session, case, step):
        events.append("profile")
        return {"trace_dir": "", "top_ops": [], "top_ops_source": "fake"}

    monkeypatch.setattr(timing.Timer, "measure", timed)
    monkeypatch.setattr(profiling, "capture", fake_capture)
    session = BenchSession(Options(sweep="smoke", run_dir=str(tmp_path / "run"), profile="*", report=False), ROOT)
    case = Case("conv2d", "keras", 3, 1, 0, 0, 8, 4, 1, "float32", "inference", False)
    benchmark = FakeBenchmark()
    row = session.run(case, benchmark)
    assert row["status"] == "ok", row["error"]
    assert events == ["timed", "profile"]
    assert benchmark.rounds and len(benchmark.rounds) == row["rounds"]  # pytest-benchmark got the latency rounds
