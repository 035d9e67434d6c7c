"""What a run records of the code, packages, settings and processor that
produced it (`bench.provenance`), checked against a scratch git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import provenance
from tests import backend as tb

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
    environment = provenance.environment()
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
    assert set(row) == {"git_commit", "git_dirty", "cpu_model", "cpu_microarchitecture", "cpu_isa"}


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


def test_environment_changes_name_each_variable_that_differs():
    base = {"OMP_NUM_THREADS": "2", "XLA_FLAGS": "--a"}
    new = {"OMP_NUM_THREADS": "2", "MALLOC_TRIM_THRESHOLD_": "1"}
    assert provenance.environment_changes(base, new) == ["MALLOC_TRIM_THRESHOLD_: unset -> 1",
                                                         "XLA_FLAGS: --a -> unset"]
    assert provenance.environment_changes(base, dict(base)) == []
    assert provenance.environment_changes(None, None) == []
    # two clones' tox environments: their cache folders differ, their settings do not
    assert provenance.environment_changes({"TRITON_CACHE_DIR": "/a/.tox/bench/tmp/triton"},
                                          {"TRITON_CACHE_DIR": "/b/.tox/bench/tmp/triton"}) == []
