"""Keep a sweep going past anything one case can do to its process.

`pytest bench ...` starts as a supervisor (`bench/conftest.py`,
`pytest_cmdline_main`) that runs the same command in a child process, in a
process group of its own, and watches the run directory's in-flight marker
(`running.json`, see `bench.rundir`):

- a case that kills its process (a segfault in a compiler or kernel, an
  abort, the kernel's OOM killer, a CUDA error that ends the process): the
  supervisor writes `crashed` and the signal or exit status into the marker
  and starts the child again with `--resume`, which records the case as a
  row with that status and goes on without running it again;
- a case that runs longer than its timeout (`--case-timeout`, the sweep's
  `case_timeout`), even inside native code that never returns to Python: the
  supervisor kills the child's process group and does the same with
  `timeout`;
- Ctrl-C goes to the child, which keeps every finished case, writes the
  report of what finished and prints the command that resumes the run;
- a sweep of several passes (`passes` in the sweep, `--passes`): when a pass
  ends, the next starts in a fresh process (`--resume`), as asv runs each
  benchmark in several processes: what differs between processes (memory
  layout, the algorithms a library picks at start-up, the machine's state a
  minute later) shows up as the spread between passes.

It restarts at most `--max-restarts` times. It imports nothing but the
standard library and `bench.rundir`: no framework is loaded twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.rundir import RunDir

CHILD_FLAG = "--bench-child"
# The pass the next child runs, set by the supervisor (a pass is not found
# from the rows: with -k or a node id a pass times part of the sweep, and
# "the first pass with cases left" would then be pass 1 for ever).
PASS_FLAG = "--bench-pass"
HANDOFF_ENV = "INVOLUTION_BENCH_HANDOFF"  # the file where the child writes its run directory
POLL_S = 0.2
# pytest's own exit codes: anything else (or a signal) ended the process from inside.
PYTEST_CODES = {0, 1, 2, 3, 4, 5}
_TAKES_VALUE = ("--run-dir", "--resume", PASS_FLAG)


def say(text: str) -> None:
    print(f"involution-bench supervisor: {text}", file=sys.stderr, flush=True)


def resume_args(args: Sequence[str], run_dir: str | Path, pass_index: int) -> list[str]:
    """The next child's arguments: the command's own, its --run-dir, --resume
    and --bench-pass replaced by the run directory and the pass to go on with."""
    return [*_without_run_args(args), "--resume", str(run_dir), PASS_FLAG, str(pass_index)]


def _without_run_args(args: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in _TAKES_VALUE:
            skip = True
            continue
        if any(arg.startswith(f"{flag}=") for flag in _TAKES_VALUE):
            continue
        out.append(arg)
    return out


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by signal {-code} ({name})"
    return f"exited with status {code}"


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the supervisor dies (Linux), so no
    orphaned sweep keeps writing the run directory."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, args: Sequence[str], max_restarts: int, environment: dict[str, str] | None = None):
        self.args = list(args)
        self.max_restarts = max_restarts
        self.environment = dict(environment or {})  # set in every child's environment (bench.allocators)
        self.child: subprocess.Popen | None = None
        self.interrupted = False
        self.events: list[str] = []

    def _start(self, args: list[str], handoff: Path) -> subprocess.Popen:
        env = {**os.environ, **self.environment, HANDOFF_ENV: str(handoff)}
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        return subprocess.Popen([sys.executable, "-m", "pytest", *args, CHILD_FLAG], env=env,
                                start_new_session=True, preexec_fn=preexec)

    def _signal_child(self, signum: int) -> None:
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.pid, signum)

    def _on_interrupt(self, signum, frame) -> None:
        # First Ctrl-C: the child stops after its case, keeps its results and
        # writes the report; a second one ends it at once.
        self._signal_child(signal.SIGKILL if self.interrupted else signal.SIGINT)
        self.interrupted = True

    def _watch(self, handoff: Path) -> tuple[int, str | None]:
        """Wait for the child; kill it when its case in flight outlives the
        case's timeout. Returns its exit code and "timeout" if it was killed so."""
        killed = None
        while True:
            code = self.child.poll()
            if code is not None:
                return code, killed
            if killed is None and not self.interrupted:
                run_dir = _run_dir(handoff)
                record = RunDir(run_dir).in_flight() if run_dir else {}
                limit = record.get("timeout_s")
                if limit and record.get("pid") == self.child.pid and time.time() - record["started"] > limit:
                    self._signal_child(signal.SIGKILL)
                    RunDir(run_dir).set_outcome("timeout", f"still running after {limit:g} s (the case timeout); "
                                                           "its process was killed")
                    killed = "timeout"
            time.sleep(POLL_S)

    def run(self) -> int:
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        restarts = 0
        args = self.args
        try:
            with tempfile.TemporaryDirectory(prefix="involution-bench-") as tmp:
                handoff = Path(tmp) / "run-dir"
                while True:
                    self.child = self._start(args, handoff)
                    code, killed = self._watch(handoff)
                    if code in PYTEST_CODES and killed is None:
                        state = _handoff(handoff)
                        if code in (0, 5) and not self.interrupted and state.get("pass", 1) < state.get("passes", 1):
                            say(f"pass {state['pass']} of {state['passes']} done; the next starts in a fresh process")
                            args = resume_args(self.args, state["run_dir"], state["pass"] + 1)
                            continue
                        return self._finish(code)
                    run_dir = _run_dir(handoff)
                    record = RunDir(run_dir).in_flight() if run_dir else {}
                    if self.interrupted or not record or record.get("pid") != self.child.pid:
                        # Not inside a case (start-up, the report, a Ctrl-C): nothing to skip past.
                        say(f"the sweep process {describe_exit(code)} outside any case"
                            + (f"; its finished cases are in {run_dir}" if run_dir else ""))
                        return self._finish(code if code > 0 else 128 - code)
                    case_id = record.get("case_id")
                    if killed is None:
                        RunDir(run_dir).set_outcome("crashed", f"the process {describe_exit(code)} during the case")
                        self.events.append(f"{case_id}: crashed ({describe_exit(code)})")
                    else:
                        self.events.append(f"{case_id}: timeout ({record.get('timeout_s'):g} s)")
                    if restarts >= self.max_restarts:
                        say(f"{self.events[-1]}; {restarts} restarts already (--max-restarts {self.max_restarts}): "
                            f"stopping. Resume with: pytest bench --benchmark-only --resume {run_dir}")
                        return self._finish(1)
                    restarts += 1
                    say(f"{self.events[-1]}; resuming the run (restart {restarts} of at most {self.max_restarts})")
                    args = resume_args(self.args, run_dir, _handoff(handoff).get("pass", 1))  # the same pass
        finally:
            signal.signal(signal.SIGINT, previous)

    def _finish(self, code: int) -> int:
        if self.events:
            say(f"{len(self.events)} case(s) ended their process and were recorded: " + "; ".join(self.events))
        return code


def _handoff(handoff: Path) -> dict:
    try:
        state = json.loads(handoff.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _run_dir(handoff: Path) -> Path | None:
    path = _handoff(handoff).get("run_dir")
    return Path(path) if path else None


def announce_run_dir(path: Path, pass_index: int = 1, passes: int = 1) -> None:
    """In the child: tell the supervisor where the run is written, and which pass this is."""
    handoff = os.environ.get(HANDOFF_ENV)
    if handoff:
        with contextlib.suppress(OSError):
            Path(handoff).write_text(json.dumps({"run_dir": str(path), "pass": pass_index, "passes": passes}))
