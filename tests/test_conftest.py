"""The shared test helpers of tests/conftest.py."""

from __future__ import annotations

import glob
import os

import pytest

from tests.conftest import REQUIRE_SYSTEM_PACKAGES, TEST_XLA_FLAGS, needs_system_package, with_test_xla_flags


@pytest.mark.parametrize("required, outcome", [(None, pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_a_missing_system_package_skips_only_where_it_is_not_required(monkeypatch, required, outcome):
    if required is None:
        monkeypatch.delenv(REQUIRE_SYSTEM_PACKAGES, raising=False)
    else:
        monkeypatch.setenv(REQUIRE_SYSTEM_PACKAGES, required)
    with pytest.raises(outcome, match="install Debian's chromium") as stopped:
        needs_system_package("no Chromium at /usr/bin/chromium: install Debian's chromium package")
    # a skip says why it is only a skip
    assert ("CI installs the package" in str(stopped.value)) == (outcome is pytest.skip.Exception)


def test_xla_compiles_the_tests_without_llvms_optimisations_unless_the_caller_says_otherwise():
    level, passes = TEST_XLA_FLAGS
    assert with_test_xla_flags("") == f"{level} {passes}"
    assert with_test_xla_flags("--xla_cpu_ftz=true") == f"--xla_cpu_ftz=true {level} {passes}"
    # a flag the caller set keeps its value, and is not repeated
    assert with_test_xla_flags("--xla_backend_optimization_level=3") == f"--xla_backend_optimization_level=3 {passes}"
    assert with_test_xla_flags(with_test_xla_flags("")) == with_test_xla_flags("")
    # this process and the ones it starts (on a machine without an NVIDIA GPU)
    if not glob.glob("/dev/nvidia[0-9]*"):
        assert set(TEST_XLA_FLAGS) <= set(os.environ["XLA_FLAGS"].split())
