"""pytest wiring of the benchmark suite: `pytest bench --benchmark-only`.

Options; the supervisor (`bench.supervisor`: the command runs again in a
child process that it watches for crashes and hangs); the parametrization of
`test_case` by the sweep's cases (cases that cannot run are collected as
skipped, with their reason); the run directory; pytest-benchmark's machine
info and JSON file; a Ctrl-C that stops the sweep before its next case even
where a finalizer swallowed it (`bench.interrupts`); the end-of-run summary and
report.

Nothing here imports a framework at module level: the supervisor never loads
one, and the child loads it with the frameworks' start-up messages silenced
unless --framework-logs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bench import allocators, compile_cache, quiet, rundir, supervisor
from bench import options as bench_options
from bench.interrupts import Interrupts

if TYPE_CHECKING:
    from bench.session import BenchSession

_KEY = pytest.StashKey[object]()
_POLICY = pytest.StashKey[dict]()
_INTERRUPTS = pytest.StashKey[Interrupts]()


def pytest_addoption(parser):
    # Numbers and choices arrive as text: bench.options.typed converts them, in one line on a bad value.
    group = parser.getgroup("involution-bench")
    group.addoption("--sweep", metavar="NAME|PATH",
                    help="sweep to run: smoke, quick, gpu, full, paper, models, or a TOML file "
                         "(default: gpu with a GPU, quick without)")
    group.addoption("--run-dir", metavar="DIR",
                    help=f"run directory (default: {rundir.RUNS.as_posix()}/<UTC time>-<backend>-<device>)")
    group.addoption("--resume", metavar="DIR", help="continue the run in DIR, repeating no finished case")
    group.addoption("--shard", metavar="I/N", help="run the I-th (from 0) of N deterministic slices of the sweep")
    group.addoption("--tf32", action="store_true", help="allow TF32 in float32 matmuls/convolutions (default: off)")
    group.addoption("--profile", nargs="?", const="*", metavar="EXPR",
                    help="capture profiler traces of every case, or of the cases whose id matches the "
                         "regular expression EXPR (write --profile=EXPR)")
    group.addoption("--bench-time", metavar="SECONDS",
                    help="seconds of timed rounds a case may take at most; its rounds stop earlier once the median "
                         "is precise to the sweep's precision (default: the sweep's time_per_case)")
    group.addoption("--l2", metavar="cold|warm",
                    help="cold: write a buffer of twice the GPU's L2 before each timed step; warm: leave the "
                         "cache as the previous step left it (default: cold with a GPU, warm on a CPU)")
    group.addoption("--case-timeout", metavar="SECONDS",
                    help="a case still running after SECONDS is stopped and recorded with status timeout "
                         "(default: the sweep's case_timeout, 900 s)")
    group.addoption("--max-restarts", default=5, metavar="N",
                    help="how many times the supervisor resumes the run after a case crashed or timed out "
                         "(default 5)")
    group.addoption("--no-supervise", action="store_true",
                    help="run in this process, without the supervisor: no protection against a case that "
                         "crashes or hangs (for debuggers)")
    group.addoption("--c-allocator", metavar="|".join(allocators.CHOICES),
                    help="the C allocator the sweep's processes start with: system (as the environment sets it), "
                         "keep (glibc keeping large blocks for reuse), tcmalloc or jemalloc (loaded first); "
                         "recorded in run.json and every row (default: system)")
    group.addoption("--threads", metavar="N",
                    help="CPU threads for every framework alike: the process is pinned to N cores and each "
                         "framework's intra-op threads set to N (default: all the cores this process may use)")
    group.addoption("--passes", metavar="N",
                    help="time every case in N processes, one pass over the sweep each, so that the spread "
                         "between processes is measured (default: the sweep's passes)")
    group.addoption("--precompile", default=0, metavar="N",
                    help="JAX, PyTorch: first compile the cases still to run in N processes into the "
                         "compilers' persistent caches (XLA; Triton, TorchInductor), then time them with "
                         "code loaded from there (default 0: off)")
    group.addoption("--precompile-time", metavar="SECONDS",
                    help="with --precompile: stop the workers after SECONDS and start timing; the sweep "
                         "compiles the cases they did not reach (default: the case timeout)")
    group.addoption("--compile-cache", metavar="DIR",
                    help="JAX, PyTorch: compile through persistent caches under DIR (default with "
                         f"--precompile: {compile_cache.DEFAULT_DIR})")
    group.addoption("--allow-other-commit", action="store_true",
                    help="let --resume continue a run that was started at another git commit")
    group.addoption("--framework-logs", action="store_true",
                    help="show what TensorFlow, JAX and PyTorch print while they start (hidden by default)")
    group.addoption("--bench-inject-failure", metavar="EXPR",
                    help="make the cases whose id matches EXPR fail (a test of the harness)")
    group.addoption("--bench-inject-crash", metavar="EXPR",
                    help="make the cases whose id matches EXPR abort their process (a test of the harness)")
    group.addoption("--bench-inject-hang", metavar="EXPR",
                    help="make the cases whose id matches EXPR hang in native code (a test of the harness)")
    group.addoption("--no-report", action="store_true", help="do not write report.html at the end")
    group.addoption(supervisor.CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    group.addoption(supervisor.PASS_FLAG, type=int, dest="bench_pass", help=argparse.SUPPRESS)


def _supervised(config) -> bool:
    """Whether this process is the supervisor: a sweep that runs cases, not
    its child, not --no-supervise, not a listing or help."""
    option = config.option
    listing = any(getattr(option, name, False) for name in ("help", "version", "collectonly", "showfixtures",
                                                            "show_fixtures_per_test", "markers"))
    return not (listing or config.getoption(supervisor.CHILD_FLAG) or config.getoption("--no-supervise"))


def _check(config) -> None:
    if config.option.help:
        return
    try:
        bench_options.check(config)
    except bench_options.UsageError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    if not _supervised(config):
        return None
    _check(config)  # before the sweep's process starts: a bad option loads no framework
    allocator = allocators.variables(config.getoption("--c-allocator") or allocators.SYSTEM, dict(os.environ))
    return supervisor.Supervisor(config.invocation_params.args, config.getoption("--max-restarts"), allocator).run()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if config.option.help:
        return
    _check(config)
    from bench import threads

    # The supervisor started this process with the chosen allocator's variables: check that it got it.
    allocator = allocators.problem(config.getoption("--c-allocator"))
    if allocator:
        raise pytest.UsageError(allocator)

    try:
        thread_policy = threads.apply(config.getoption("--threads"))  # before any framework sizes its pools
    except bench_options.UsageError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[_POLICY] = thread_policy
    logs = config.getoption("--framework-logs")
    if not logs:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines
    with quiet.native_stderr(silenced=not logs, expected=(pytest.UsageError,)):
        from bench.session import BenchSession, Options, UsageError

        _configure(config, BenchSession, Options, UsageError)


def _configure(config, BenchSession, Options, UsageError):  # noqa: N803 (classes imported lazily)
    options = Options(
        sweep=config.getoption("--sweep"), run_dir=config.getoption("--run-dir"),
        resume=config.getoption("--resume"), shard=config.getoption("--shard"), tf32=config.getoption("--tf32"),
        profile=config.getoption("--profile"), bench_time=config.getoption("--bench-time"), l2=config.getoption("--l2"),
        inject_failure=config.getoption("--bench-inject-failure"), report=not config.getoption("--no-report"),
        inject_crash=config.getoption("--bench-inject-crash"), inject_hang=config.getoption("--bench-inject-hang"),
        case_timeout=config.getoption("--case-timeout"), thread_policy=config.stash.get(_POLICY, None),
        allow_other_commit=config.getoption("--allow-other-commit"), passes=config.getoption("--passes"),
        precompile=config.getoption("--precompile"), compile_cache=config.getoption("--compile-cache"),
        precompile_time=config.getoption("--precompile-time"), pass_index=config.getoption("bench_pass"),
    )
    try:
        session = BenchSession(options, config.rootpath)
    except UsageError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[_KEY] = session
    if not config.option.collectonly:
        config.stash[_INTERRUPTS] = Interrupts()
        config.stash[_INTERRUPTS].install()
        try:
            session.ensure_run_dir()
        except OSError as error:  # bench.rundir.RunDirError: one line naming the directory
            raise pytest.UsageError(str(error)) from None
        supervisor.announce_run_dir(session.run_dir.path, session.pass_index, session.passes)
        session.precompile()  # before the first timed case: nothing else runs while it compiles
        previous = session.run_dir.benchmark_json
        if previous.exists():
            # Keep the part written by the session being resumed; merged at the end.
            previous.rename(previous.with_name(f"benchmark.part-{len(list(previous.parent.glob('benchmark.part-*')))}.json"))
        if config.getoption("benchmark_json") is None:
            config.option.benchmark_json = session.run_dir.benchmark_json


def pytest_unconfigure(config):
    if _INTERRUPTS in config.stash:
        config.stash[_INTERRUPTS].uninstall()
    if _KEY in config.stash:  # a normal end: the next pass or --resume takes the directory over silently
        _session(config).run_dir.unlock()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # A Ctrl-C that a finalizer swallowed during the previous case stops the
    # sweep here (bench/interrupts.py).
    if _INTERRUPTS in item.config.stash:
        item.config.stash[_INTERRUPTS].check()


def _session(config) -> BenchSession:
    return config.stash[_KEY]


def pytest_report_header(config):
    if _KEY not in config.stash:
        return None
    s = _session(config)
    runnable = sum(1 for _, reason in s.cases if reason is None)
    return [
        f"involution-bench: backend {s.backend} on {s.device_name} ({s.device}); {s.precision}",
        f"sweep {s.sweep.name} ({s.sweep.source}): {len(s.cases)} cases, {runnable} runnable"
        + (f", {len(s.finished)} already finished" if s.finished else ""),
        f"run directory: {s.run_dir.path}" + (f" (pass {s.pass_index} of {s.passes})" if s.passes > 1 else ""),
        f"C allocator: {s.provenance['c_allocator']}",  # moves CPU times of involution (docs/PERF.md, 33-35)
        *s.notes,
    ]


def pytest_generate_tests(metafunc):
    # Parametrized by id (a plain string in benchmark.json); `case` resolves it.
    if "case_id" not in metafunc.fixturenames:
        return
    params = []
    for case, reason in _session(metafunc.config).cases:
        # The reason alone, without the case's id: pytest's summary then counts
        # the cases of each reason on one line instead of listing each case.
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(case.id, id=case.id, marks=marks))
    metafunc.parametrize("case_id", params)


def pytest_collection_modifyitems(config, items):
    if _KEY not in config.stash:
        return
    finished = _session(config).finished
    if not finished:
        return
    keep, done = [], []
    for item in items:
        case_id = getattr(item, "callspec", None) and item.callspec.params.get("case_id")
        (done if case_id in finished else keep).append(item)
    if done:
        config.hook.pytest_deselected(items=done)
        items[:] = keep


@pytest.fixture
def bench_session(request) -> BenchSession:
    return _session(request.config)


@pytest.fixture
def case(case_id, bench_session):
    return bench_session.by_id[case_id]


def pytest_benchmark_update_machine_info(config, machine_info):
    if _KEY in config.stash:
        machine_info["involution_bench"] = _session(config).machine_info()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if _KEY not in config.stash or config.option.collectonly:
        return
    s = _session(config)
    _merge_benchmark_json(s.run_dir.benchmark_json)
    if s.options.report and s.run_dir.results.exists() and s.pass_index == s.passes:
        try:
            from reports import build

            s.report_path = build.build_report([s.run_dir.path], output=s.run_dir.report)
        except Exception as error:  # the results are safe; say why the report is missing
            s.report_error = f"{type(error).__name__}: {error}"


def _merge_benchmark_json(path: Path) -> None:
    """Merge benchmark.json with the parts of resumed sessions."""
    parts = sorted(path.parent.glob("benchmark.part-*.json"))
    if not parts:
        return
    documents = []
    for part in [*parts, path]:
        try:
            documents.append(json.loads(part.read_text()))
        except (OSError, ValueError):
            continue
    if not documents:
        return
    merged = documents[-1]
    seen = set()
    benchmarks = []
    for document in documents:
        for bench in document.get("benchmarks", []):
            if bench.get("fullname") not in seen:
                seen.add(bench.get("fullname"))
                benchmarks.append(bench)
    merged["benchmarks"] = benchmarks
    path.write_text(json.dumps(merged, indent=4))
    for part in parts:
        part.unlink()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _KEY not in config.stash or config.option.collectonly:
        return
    s = _session(config)
    terminalreporter.section("involution-bench")
    for line in s.summary_lines():
        terminalreporter.write_line(line)
    if getattr(s, "report_path", None):
        terminalreporter.write_line(f"  report: {s.report_path}")
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        terminalreporter.write_line(f"  interrupted: every finished case is in {s.run_dir.results}; resume with: "
                                    f"pytest bench --benchmark-only --resume {s.run_dir.path}")
    elif getattr(s, "report_error", None):
        terminalreporter.write_line(f"  report not written: {s.report_error} "
                                    f"(build it with: python -m reports build {s.run_dir.path})")
