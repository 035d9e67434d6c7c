"""Fixtures that tests of more than one package use."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator

import pytest

# .ci/run installs the system packages some tests need (Debian's Chromium and
# ChromeDriver, its Fashion-MNIST) and sets this variable: there a missing
# package fails those tests instead of skipping them, so that an install step
# that stopped working cannot pass as a green run.
REQUIRE_SYSTEM_PACKAGES = "INVOLUTION_BENCH_REQUIRE_SYSTEM_PACKAGES"
# What JAX's `jax_disable_most_optimizations` sets, for TensorFlow's XLA too.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def needs_system_package(reason: str) -> None:
    """Stop a test whose system package is missing: skipped on a developer's
    machine, with `reason` (what is missing and how to install it); failed
    where REQUIRE_SYSTEM_PACKAGES=1 (CI, which installed them)."""
    if os.environ.get(REQUIRE_SYSTEM_PACKAGES) == "1":
        pytest.fail(f"{reason}; {REQUIRE_SYSTEM_PACKAGES}=1 says it was installed", pytrace=False)
    pytest.skip(f"{reason}. Skipped on this machine only: CI installs the package, and there its absence "
                "fails the test")


def pytest_configure(config):
    if config.option.help:
        return
    from bench import keras_backend

    message = keras_backend.problem()  # one line instead of a traceback from deep inside `import keras`
    if message:
        raise pytest.UsageError(message)
    # XLA (JAX's compiler, and TensorFlow's with jit_compile) without LLVM's optimisations: the HLO the tests
    # check is the same, results differ only in rounding, and the JAX run, the interpreted Triton and Pallas
    # kernels most of all, takes a third less time (docs/PERF.md, section 37). In the environment, read when
    # XLA starts, so that the processes the tests start (sweeps, precompiling workers, a fresh process
    # reloading a model) compile the same way and share compiled executables; a flag the caller set wins.
    # Not on a machine with an NVIDIA GPU (docs/gpu/run.sh check): there the kernels' tests compile as the
    # sweeps do.
    if not glob.glob("/dev/nvidia[0-9]*"):
        os.environ["XLA_FLAGS"] = with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))


def with_test_xla_flags(flags: str) -> str:
    """`flags` (an XLA_FLAGS value) with each of TEST_XLA_FLAGS it does not set."""
    given = flags.split()
    named = {flag.split("=")[0] for flag in given}
    return " ".join([*given, *(flag for flag in TEST_XLA_FLAGS if flag.split("=")[0] not in named)])


@pytest.fixture
def set_switch(monkeypatch) -> Iterator[Callable[[str, str | None], None]]:
    """set_switch(variable, value) sets a kernel switch (INVOLUTION_UNROLL_WINDOW,
    INVOLUTION_TILE_WIDTH) for one test, None unsets it. The kernels read each
    once per process (`_common.switch`): its cache is cleared at each change
    and after the test, once the environment is restored."""
    from layers.aggregation._common import switch

    def set_(variable: str, value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
        switch.cache_clear()

    yield set_
    monkeypatch.undo()
    switch.cache_clear()
