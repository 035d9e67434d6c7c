"""bench.allocators: the C allocator a sweep's processes start with
(`--c-allocator`), its variables, and the checks that the process got it."""

from __future__ import annotations

import json
import sys

from bench import allocators, provenance
from tests import backend as tb
from tests.bench.conftest import TINY, run_bench
from tests.conftest import needs_system_package

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
TCMALLOC = "/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
JEMALLOC = "/lib/x86_64-linux-gnu/libjemalloc.so.2"
KEEP = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}


@tb.BACKEND_INDEPENDENT
def test_variables_of_each_choice(monkeypatch):
    monkeypatch.setattr(allocators, "library_file", lambda choice: f"lib{choice}.so.9")
    assert allocators.variables("system", {"LD_PRELOAD": "libx.so"}) == {}
    assert allocators.variables("keep", {}) == KEEP
    assert allocators.variables("tcmalloc", {}) == {"LD_PRELOAD": "libtcmalloc.so.9"}
    # first in LD_PRELOAD, where the dynamic linker takes malloc from; what the caller preloads stays
    assert allocators.variables("jemalloc", {"LD_PRELOAD": "libx.so"}) == {"LD_PRELOAD": "libjemalloc.so.9 libx.so"}


@tb.BACKEND_INDEPENDENT
def test_an_unknown_missing_or_unsupported_allocator_is_one_line(monkeypatch):
    assert allocators.unusable("mimalloc") == ("--c-allocator takes system or keep or tcmalloc or jemalloc. "
                                               "Received: --c-allocator=mimalloc")
    assert allocators.unusable("system") is None
    assert allocators.missing("keep", glibc="glibc 2.36") is None
    assert allocators.missing("keep", glibc="") == (
        "--c-allocator=keep sets glibc's malloc thresholds, and this machine's C library is not glibc; choose system. "
        "Received: --c-allocator=keep")
    assert allocators.missing("tcmalloc", platform="darwin") == (
        "--c-allocator=tcmalloc loads the library through LD_PRELOAD, which only Linux's dynamic linker reads (this "
        "is darwin); choose system. Received: --c-allocator=tcmalloc")
    monkeypatch.setattr(allocators, "library_file", lambda choice: None)
    assert allocators.missing("tcmalloc", platform="linux") == (
        "--c-allocator=tcmalloc: libtcmalloc_minimal is not installed here; install it (Debian: apt-get install "
        "libtcmalloc-minimal4) or choose another of system, keep, tcmalloc, jemalloc. Received: --c-allocator=tcmalloc")
    assert "apt-get install libjemalloc2" in allocators.missing("jemalloc", platform="linux")


@tb.BACKEND_INDEPENDENT
def test_problem_says_when_the_process_did_not_get_its_allocator():
    assert allocators.problem(None, TCMALLOC, {}) is None and allocators.problem("system", LIBC, {}) is None
    assert allocators.problem("tcmalloc", TCMALLOC, {}) is None
    assert allocators.problem("jemalloc", JEMALLOC, {"MALLOC_CONF": "x"}) is None
    assert allocators.problem("keep", LIBC, {**KEEP, "OTHER": "1"}) is None
    message = allocators.problem("tcmalloc", LIBC, {})
    assert message.startswith(f"--c-allocator=tcmalloc: this process's malloc is {provenance.c_allocator(LIBC, {})}. "
                              "The supervisor starts the sweep's process with LD_PRELOAD=")
    assert message.endswith("with --no-supervise, start pytest so yourself. Received: --c-allocator=tcmalloc")
    assert allocators.problem("jemalloc", TCMALLOC, {}) is not None
    assert "MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 and no allocator in LD_PRELOAD" \
        in allocators.problem("keep", LIBC, {"MALLOC_MMAP_THRESHOLD_": "4000000000"})
    assert allocators.problem("keep", TCMALLOC, KEEP) is not None  # keep is glibc's setting


@tb.BACKEND_INDEPENDENT
def test_a_sweep_runs_and_records_the_allocator_chosen(tmp_path):
    """The supervisor starts the sweep's process with tcmalloc loaded first:
    run.json and every row say so; resuming the run with another allocator
    is refused, and --no-supervise cannot load one (both one line)."""
    if allocators.missing("tcmalloc"):  # not installed (CI installs it), or a platform without LD_PRELOAD
        result = run_bench("--sweep", str(TINY), "--run-dir", str(tmp_path / "run"), "--c-allocator", "tcmalloc")
        text = result.stdout + result.stderr
        assert result.returncode == 4 and allocators.missing("tcmalloc") in text and "Traceback" not in text
        if sys.platform.startswith("linux"):
            needs_system_package(allocators.missing("tcmalloc"))  # the sweep itself is tested where it is installed
        return
    path = tmp_path / "run"
    case = "involution-shiftsum-k3s1g2r2-8px"
    result = run_bench("--sweep", str(TINY), "--run-dir", str(path), "--c-allocator", "tcmalloc", "-k", case,
                       "--no-report")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    recorded = json.loads((path / "run.json").read_text())["c_allocator"]
    assert recorded.startswith(f"{allocators.library_file('tcmalloc')} (/"), recorded
    rows = [json.loads(line) for line in (path / "results.jsonl").read_text().splitlines()]
    assert rows and {row["c_allocator"] for row in rows} == {recorded}
    assert f"C allocator: {recorded}" in output  # the sweep's header says it before the first case
    refused = run_bench("--resume", str(path), "--c-allocator", "keep")
    text = refused.stdout + refused.stderr
    assert refused.returncode == 4 and "Traceback" not in text, text[-3000:]
    assert f"--resume: {path} was started with the C allocator {recorded}, this process has glibc" in text
    alone = run_bench("--sweep", str(TINY), "--run-dir", str(tmp_path / "alone"), "--c-allocator", "tcmalloc",
                      "--no-supervise", "-k", case)
    text = alone.stdout + alone.stderr
    assert alone.returncode == 4 and "Traceback" not in text, text[-3000:]
    assert "--c-allocator=tcmalloc: this process's malloc is glibc" in text


@tb.BACKEND_INDEPENDENT
def test_a_bad_choice_stops_the_sweep_before_it_starts(tmp_path):
    result = run_bench("--sweep", str(TINY), "--run-dir", str(tmp_path / "run"), "--c-allocator", "mimalloc")
    text = result.stdout + result.stderr
    assert result.returncode == 4 and "Traceback" not in text
    assert "--c-allocator takes system or keep or tcmalloc or jemalloc. Received: --c-allocator=mimalloc" in text
    assert not (tmp_path / "run").exists()
