"""A run directory: every output of one benchmark run, written as it happens.

    <run-dir>/
      run.json        what was run (sweep, backend, device, options), written first
      results.jsonl   one JSON line per finished case, flushed and fsynced as the
                      case finishes: a run that is killed keeps every finished case
      running.json    the case in flight, written before it starts and removed
                      when its line is written: after a crash or a hang it names
                      the case to record as `crashed` or `timeout` on --resume
      .lock           held (flock) by the one process writing the directory, its pid
                      inside; cleared at a normal end, left naming a process that died
      benchmark.json  pytest-benchmark's own format (`pytest-benchmark compare`),
                      written when the session ends (merged across --resume)
      traces/         profiler traces (--profile)
      precompile*     --precompile: its cases, each worker's log, and each session's
                      summary line (bench.compile_cache names them)
      report.html     the report (reports/)

This module is the one home of the run format — the schema version, the file
names, the stamp format and the column lists — and loads no framework: the
reports and the sweep supervisor use it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path

from bench import nvml
from bench.cases import Case

SCHEMA = 1  # of every line of results.jsonl (and of run.json)
RESULTS = "results.jsonl"
META = "run.json"
RUNNING = "running.json"
LOCK = ".lock"
BENCHMARK_JSON = "benchmark.json"
REPORT = "report.html"
TRACES = "traces"
HISTORY = "seed_history.jsonl"  # the Keras example's experiment (bench.seed_models)
KERNEL_MAPS = "kernel_maps*.png"
CSV = "results.csv"
STAMP = "%Y%m%dT%H%M%SZ"  # the run's start in run.json and in default run directory names
# Where run directories go by default (ignored by git): under pytest's root folder (the repository)
# for a sweep, under the current folder for bench.seed_models.
RUNS = Path("reports") / "runs"

# Columns. The sweep axes are the fields of bench.cases.Case; a run's setup is
# what must match for two cases to be compared.
AXES = Case.axes()
SETUP = ("backend", "device_name", "tf32", "l2")
INVOLUTION_ONLY = ("groups", "reduction_ratio")
# Row fields copied into pytest-benchmark's extra_info (plain values).
EXTRA_INFO = (
    "case_id", *AXES, "implementation_resolved", "backend", "device", "device_name", "precision", "params",
    "trainable_params", "macs", "flops", "flops_measured", "flops_measured_source", "bytes_min",
    "bytes_aggregation", "largest_intermediate_bytes", "peak_memory_bytes", "peak_memory_source",
    "peak_memory_valid", "peak_memory_floor_bytes", "peak_memory_measured_bytes", "peak_memory_invalid_reason",
    "compile_seconds", "compile_cache", "throughput", "gflops_per_s", "gbytes_per_s", "flops_fraction",
    "bandwidth_fraction",
    "rates_from", "stopped_by", "median_ci_low_s", "median_ci_high_s", "device_median_s", "device_q1_s",
    "device_q3_s", "device_median_ci_low_s", "device_median_ci_high_s", "device_rounds", "device_stopped_by",
    "device_time_source", "l2", "l2_flush_bytes", *nvml.FIELDS, "git_commit", "git_dirty", "threads", "status",
    "error",
)


class RunDirError(OSError):
    """The run directory cannot be used; the message names it and says what to do."""


def unwritable(option: str, path: str | os.PathLike, error: OSError, kind: str = "directory") -> RunDirError:
    """The one-line error for a `kind` ("directory" or "file") given to
    `option` that cannot be made or written."""
    return RunDirError(f"{option} {path}: cannot be created or written ({error.strerror or error}); "
                       f"choose a {kind} you can write to. Received: {option}={path}")


def writable_folder(path: str | os.PathLike, option: str) -> Path:
    """Create the folder given to `option` (with its parents) and write a file
    in it, before any work: a folder that cannot hold the output is a one-line
    error at the start, not a traceback after the first measurement."""
    return _writable(Path(path), option, Path(path), "directory")


def writable_file(path: str | os.PathLike, option: str) -> Path:
    """`writable_folder` for the folder of an output file given to `option`."""
    return _writable(Path(path).parent, option, Path(path), "file")


def _writable(folder: Path, option: str, given: Path, kind: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise unwritable(option, given, error, kind) from None
    return given


def _plain(value):
    """JSON-safe: numpy scalars to Python numbers, NaN/inf to None."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(row: dict) -> str:
    return json.dumps(row, default=_plain, allow_nan=False, separators=(",", ":"))


def default_path(root: str | os.PathLike, label: str) -> Path:
    """A new run directory's default path: ``<root>/reports/runs/<UTC time>-<label>``."""
    return Path(root) / RUNS / f"{utc_stamp()}-{label}"


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime(STAMP)


def parse_stamp(stamp: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(stamp, STAMP).replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None


def readable_stamp(stamp: str) -> str:
    """'20261123T205555Z' as '2026-11-23 20:55:55 UTC' (anything else unchanged)."""
    when = parse_stamp(stamp)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else str(stamp)


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.results = self.path / RESULTS
        self.meta = self.path / META
        self.running = self.path / RUNNING
        self.traces = self.path / TRACES
        self.report = self.path / REPORT
        self.benchmark_json = self.path / BENCHMARK_JSON
        self._lock = None

    # -- creating and owning the directory -------------------------------------
    def create(self, meta: dict) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            previous = self.read_meta()
            sessions = previous.get("sessions", []) + [meta]
            self.meta.write_text(json.dumps({"schema": SCHEMA, **meta, "sessions": sessions}, indent=2, default=str))
        except OSError as error:
            raise self.unusable(error) from None

    def unusable(self, error: OSError) -> RunDirError:
        return unwritable("--run-dir", self.path, error)

    def lock(self) -> int | None:
        """Become the directory's one writer (an flock on .lock, released by
        the system when this process ends). Returns the pid of a dead previous
        holder whose lock was taken over, if any; a live holder is an error."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK, "a+", encoding="utf-8")
        except OSError as error:
            raise self.unusable(error) from None
        import fcntl

        handle.seek(0)
        holder = _read_json(handle.read())
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise self._busy(holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": utc_stamp()}))
        handle.flush()
        self._lock = handle
        previous = holder.get("pid")
        return previous if isinstance(previous, int) and previous != os.getpid() else None

    def unlock(self) -> None:
        """Give the directory up at a normal end: the holder's record is
        cleared, so the next writer (the next pass, a --resume) finds no lock
        to take over. After a crash the record stays and names the dead
        process."""
        if self._lock is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            self._lock.seek(0)
            self._lock.truncate()
            self._lock.flush()
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
        self._lock.close()
        self._lock = None

    def _busy(self, holder: dict) -> RunDirError:
        who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
        return RunDirError(f"--run-dir {self.path} is in use by {who} (one sweep writes a run directory at a "
                           f"time): wait for it to end or choose another directory")

    def check_free(self) -> None:
        """Raise RunDirError if a live process holds the directory's lock
        (a check before starting; `lock` is what holds it)."""
        import fcntl

        try:
            handle = open(self.path / LOCK, encoding="utf-8")
        except OSError:
            return  # no lock file: nobody has held it
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                raise self._busy(_read_json(handle.read())) from None

    def read_meta(self) -> dict:
        try:
            return json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}

    # -- rows --------------------------------------------------------------------
    def append(self, row: dict) -> None:
        line = dumps({"schema": SCHEMA, **row})
        try:
            with open(self.results, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:
            raise RunDirError(f"{self.results}: the case's row could not be written ({error.strerror or error}); "
                              f"the rows written before it are kept: free space or choose another --run-dir, "
                              f"then --resume {self.path}") from None

    def rows(self) -> list[dict]:
        """The complete lines of results.jsonl (a line cut by a crash is skipped)."""
        rows = []
        if not self.results.exists():
            return rows
        with open(self.results, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and "case_id" in row:
                    rows.append(row)
        return rows

    def finished_ids(self, pass_index: int | None = None) -> set[str]:
        """Case ids with a complete line (in pass `pass_index`, when given). A
        case that crashed or timed out is finished for every later pass: it
        is not run again."""
        done = set()
        for row in self.rows():
            if pass_index is None or row.get("pass", 1) == pass_index:
                done.add(row["case_id"])
            elif row.get("status") in ("crashed", "timeout") and row.get("pass", 1) < pass_index:
                done.add(row["case_id"])
        return done

    def current_pass(self, case_ids: set[str], passes: int) -> int:
        """The first pass that has not timed every case (the last when all have)."""
        for index in range(1, passes + 1):
            if not case_ids <= self.finished_ids(index):
                return index
        return passes

    def repair_tail(self) -> None:
        """End results.jsonl with a newline, so a line cut by a kill stays
        its own (skipped) line instead of swallowing the next one."""
        if self.results.exists() and self.results.stat().st_size:
            with open(self.results, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    # -- the case in flight --------------------------------------------------------
    def start_case(self, case_id: str, timeout_s: float | None, attempt: int = 1, pass_index: int = 1) -> None:
        """Name the case about to run (atomically: a reader never sees half a file)."""
        record = {"case_id": case_id, "pid": os.getpid(), "started": time.time(), "timeout_s": timeout_s,
                  "attempt": attempt, "pass": pass_index}
        scratch = self.running.with_suffix(".tmp")
        try:
            scratch.write_text(json.dumps(record))
            os.replace(scratch, self.running)
        except OSError as error:
            raise RunDirError(f"{self.running}: the case in flight could not be noted ({error.strerror or error}); "
                              f"the rows written so far are kept: free space or choose another --run-dir, then "
                              f"--resume {self.path}") from None

    def in_flight(self) -> dict:
        """The case in flight (or left in flight by a process that died), or {}."""
        try:
            return _read_json(self.running.read_text())
        except OSError:
            return {}

    def set_outcome(self, outcome: str, detail: str) -> None:
        """The supervisor's verdict on the case in flight: "crashed" or "timeout"."""
        record = self.in_flight()
        if record:
            record.update(outcome=outcome, detail=detail, ended=time.time())
            scratch = self.running.with_suffix(".tmp")
            scratch.write_text(json.dumps(record))
            os.replace(scratch, self.running)

    def end_case(self) -> None:
        try:
            self.running.unlink()
        except FileNotFoundError:
            pass


def _read_json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
