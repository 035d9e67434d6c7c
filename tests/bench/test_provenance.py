"""What a run records of the code, packages, settings and processor that
produced it (`bench.provenance`), checked against a scratch git repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import allocators, provenance
from tests import backend as tb
from tests.conftest import needs_system_package

pytestmark = tb.BACKEND_INDEPENDENT


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repository(tmp_path) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "layer.py").write_text("x = 1\n")
    _git(tmp_path, "add", "layer.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_git_names_the_commit_and_whether_tracked_files_changed(repository):
    record = provenance.git(repository)
    assert record["git_commit"] == _git(repository, "rev-parse", "HEAD")
    assert record["git_dirty"] is False
    (repository / "notes.txt").write_text("untracked files do not change what runs\n")
    assert provenance.git(repository)["git_dirty"] is False
    (repository / "layer.py").write_text("x = 2\n")
    assert provenance.git(repository)["git_dirty"] is True


def test_outside_a_checkout_the_commit_is_null_with_the_reason(tmp_path):
    record = provenance.git(tmp_path / "missing")
    assert record["git_commit"] is None and record["git_dirty"] is None
    assert record["git_source"].startswith("not a git checkout")


def test_environment_keeps_what_changes_results_and_nothing_else(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=0")
    monkeypatch.setenv("INVOLUTION_TILE_WIDTH", "8")
    monkeypatch.setenv("INVOLUTION_BENCH_HANDOFF", "/tmp/handoff.json")  # the supervisor's, not a setting
    monkeypatch.setenv("SOMETHING_ELSE", "1")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4000000000")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4000000000")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    for terraform in ("TF_CLI_CONFIG_FILE", "TF_VAR_region", "TF_LOG", "TF_LOG_PATH", "TF_DATA_DIR"):
        monkeypatch.setenv(terraform, "x")  # Terraform's, not TensorFlow's
    environment = provenance.environment()
    assert environment["TF_CPP_MIN_LOG_LEVEL"] == "2" and not any(key in environment for key in (
        "TF_CLI_CONFIG_FILE", "TF_VAR_region", "TF_LOG", "TF_LOG_PATH", "TF_DATA_DIR"))
    assert environment["MALLOC_TRIM_THRESHOLD_"] == "4000000000"
    assert environment["GLIBC_TUNABLES"] == "glibc.malloc.mmap_threshold=4000000000"
    assert environment["XLA_FLAGS"] == "--xla_gpu_autotune_level=0"
    assert environment["INVOLUTION_TILE_WIDTH"] == "8"
    assert "INVOLUTION_BENCH_HANDOFF" not in environment and "SOMETHING_ELSE" not in environment


def test_versions_and_cpu():
    versions = provenance.versions()
    assert set(versions) <= set(provenance.PACKAGES)
    assert {"numpy", "scipy", "pytest"} <= set(versions)
    cpu = provenance.cpu()
    assert cpu["cpu_model"]
    assert set(filter(None, cpu["cpu_isa"].split(","))) <= set(provenance.ISA)


def test_rows_carry_the_commit_and_processor(repository):
    record = provenance.collect(repository)
    row = provenance.row_fields(record)
    assert row["git_commit"] == record["git_commit"] and row["cpu_model"] == record["cpu_model"]
    assert set(row) == {"git_commit", "git_dirty", "cpu_model", "cpu_microarchitecture", "cpu_isa", "c_allocator"}
    assert row["c_allocator"] == record["c_allocator"] == provenance.c_allocator()


def test_machine_key_tells_machines_apart():
    one = {"cpu_model": "AMD EPYC 7B13", "cpu_microarchitecture": "zen3", "cpu_isa": "avx2",
           "machine": {"gpu_name": "NVIDIA H100 80GB HBM3"}, "device_name": "NVIDIA H100 80GB HBM3"}
    assert provenance.machine_key(one) == provenance.machine_key(dict(one))
    assert provenance.machine_key(one) != provenance.machine_key({**one, "cpu_microarchitecture": "zen2"})
    assert provenance.machine_key(one) != provenance.machine_key({**one, "device_name": "NVIDIA H200"})


def test_short_commit():
    assert provenance.short("0123456789abcdef0123456789abcdef01234567") == "0123456789"
    assert provenance.short(None) == "None"
    assert provenance.short("not-a-sha") == "not-a-sha"


def test_differences_name_each_recorded_setting_that_differs():
    base = {"git_commit": "0123456789" * 4, "git_dirty": False, "c_allocator": "glibc 2.36 (libc.so.6), its defaults",
            "packages": {"jax": "0.11.2", "numpy": "2.3.0"},
            "environment": {"OMP_NUM_THREADS": "2", "XLA_FLAGS": "--a"}}
    new = {**base, "git_dirty": True, "packages": {"numpy": "2.3.0"},
           "environment": {"OMP_NUM_THREADS": "2", "MALLOC_TRIM_THRESHOLD_": "1"}}
    assert provenance.differences([base, new]) == [
        {"commit": "0123456789", "jax": "0.11.2", "MALLOC_TRIM_THRESHOLD_": "unset", "XLA_FLAGS": "--a"},
        {"commit": "0123456789 (modified)", "jax": "not installed", "MALLOC_TRIM_THRESHOLD_": "1",
         "XLA_FLAGS": "unset"}]
    assert provenance.differences([base, dict(base)]) == [{}, {}]
    assert provenance.differences([{}, {}]) == [{}, {}]
    # what one run did not record at all (a run.json from before the field) is not a difference
    assert provenance.differences([base, {"git_commit": "f" * 40}]) == [{"commit": "0123456789"},
                                                                        {"commit": "ffffffffff"}]
    # the allocator without its library's path
    tcmalloc = {"c_allocator": "libtcmalloc_minimal.so.4 (/usr/lib/libtcmalloc_minimal.so.4), TCMALLOC_X=1"}
    assert provenance.differences([base, tcmalloc]) == [{"C allocator": "glibc 2.36, its defaults"},
                                                        {"C allocator": "libtcmalloc_minimal.so.4, TCMALLOC_X=1"}]
    # the allocator named once: LD_PRELOAD, which loaded it, is left out
    preloaded = {**tcmalloc, "environment": {"LD_PRELOAD": "libtcmalloc_minimal.so.4"}}
    assert provenance.differences([{**base, "environment": {}}, preloaded]) == [
        {"C allocator": "glibc 2.36, its defaults"}, {"C allocator": "libtcmalloc_minimal.so.4, TCMALLOC_X=1"}]
    # two clones' tox environments: their cache folders differ, their settings do not
    assert provenance.differences([{"environment": {"TRITON_CACHE_DIR": "/a/.tox/bench/tmp/triton"}},
                                   {"environment": {"TRITON_CACHE_DIR": "/b/.tox/bench/tmp/triton"}}]) == [{}, {}]


def test_c_allocator_names_the_library_and_only_its_own_settings():
    environ = {"MALLOC_TRIM_THRESHOLD_": "4000000000", "GLIBC_TUNABLES": "glibc.malloc.arena_max=1",
               "MALLOC_CONF": "background_thread:true", "TCMALLOC_RELEASE_RATE": "0", "OMP_NUM_THREADS": "2"}
    glibc = provenance.c_allocator("/lib/x86_64-linux-gnu/libc.so.6", environ)
    assert glibc.endswith(" (libc.so.6), GLIBC_TUNABLES=glibc.malloc.arena_max=1, "
                          "MALLOC_TRIM_THRESHOLD_=4000000000")
    assert provenance.c_allocator("/usr/lib/libtcmalloc_minimal.so.4", environ) == (
        "libtcmalloc_minimal.so.4 (/usr/lib/libtcmalloc_minimal.so.4), TCMALLOC_RELEASE_RATE=0")
    assert provenance.c_allocator("/usr/lib/libjemalloc.so.2", environ) == (
        "libjemalloc.so.2 (/usr/lib/libjemalloc.so.2), MALLOC_CONF=background_thread:true")
    assert provenance.c_allocator("/usr/lib/libjemalloc.so.2", {}) == (
        "libjemalloc.so.2 (/usr/lib/libjemalloc.so.2), its defaults")
    # one it does not know: every candidate setting, whichever allocator reads it
    assert provenance.c_allocator("/opt/libmimalloc.so.2", {"MALLOC_CONF": "x", "PATH": "/bin"}) == (
        "libmimalloc.so.2 (/opt/libmimalloc.so.2), MALLOC_CONF=x")


def _allocator_of_a_process(preload: str | None) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LD_PRELOAD", "MALLOC_"))}
    if preload:
        env["LD_PRELOAD"] = preload
    done = subprocess.run([sys.executable, "-c", "from bench import provenance; print(provenance.c_allocator())"],
                          cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the C library's malloc is glibc's on Linux")
def test_c_allocator_is_the_one_the_process_calls():
    """Asked of the process itself (dladdr of the malloc it calls): glibc's
    unless another allocator is loaded first, as LD_PRELOAD does."""
    assert _allocator_of_a_process(None).startswith("glibc ")
    missing = [allocators.missing(choice) for choice in allocators.LIBRARIES if allocators.missing(choice)]
    if missing:
        needs_system_package("; ".join(missing))
    for choice in allocators.LIBRARIES:
        soname = allocators.library_file(choice)
        assert _allocator_of_a_process(soname).startswith(f"{soname} (/")
