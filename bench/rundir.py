"""A run directory: every output of one benchmark run, written as it happens.

    <run-dir>/
      run.json        what was run (sweep, backend, device, options), written first
      results.jsonl   one JSON line per finished case, flushed and fsynced as the
                      case finishes: a run that is killed keeps every finished case
      benchmark.json  pytest-benchmark's own format (`pytest-benchmark compare`),
                      written when the session ends (merged across --resume)
      traces/         profiler traces (--profile)
      report.html     the report (reports/)
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

SCHEMA = 1


def _plain(value):
    """JSON-safe: numpy scalars to Python numbers, NaN/inf to None."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(row: dict) -> str:
    return json.dumps(row, default=_plain, allow_nan=False, separators=(",", ":"))


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.results = self.path / "results.jsonl"
        self.meta = self.path / "run.json"
        self.traces = self.path / "traces"
        self.report = self.path / "report.html"
        self.benchmark_json = self.path / "benchmark.json"

    def create(self, meta: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        previous = self.read_meta()
        sessions = previous.get("sessions", []) + [meta]
        self.meta.write_text(json.dumps({"schema": SCHEMA, **meta, "sessions": sessions}, indent=2, default=str))

    def read_meta(self) -> dict:
        try:
            return json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}

    def append(self, row: dict) -> None:
        line = dumps({"schema": SCHEMA, **row})
        with open(self.results, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finished_ids(self) -> set[str]:
        """Case ids with a complete line in results.jsonl (a line cut by a
        crash does not count: that case runs again)."""
        done = set()
        if not self.results.exists():
            return done
        with open(self.results, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    done.add(json.loads(line)["case_id"])
                except (ValueError, KeyError, TypeError):
                    continue
        return done

    def repair_tail(self) -> None:
        """End results.jsonl with a newline, so a line cut by a kill stays
        its own (skipped) line instead of swallowing the next one."""
        if self.results.exists() and self.results.stat().st_size:
            with open(self.results, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
