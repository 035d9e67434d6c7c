"""The measurements themselves: the harness's own cost, analytic against
measured FLOPs, and measured peak memory against the tensors a step must
hold."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bench import backends, timing
from bench.backends import Step
from bench.cases import DEFAULT_JIT, Case
from bench.session import memory_check
from layers import aggregation, counting, registry
from tests import backend as tb
from tests.bench.conftest import bench_env

RUNNER = backends.current()


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_harness_adds_under_five_percent_to_a_100us_operation():
    """A 100 us step timed by the suite's latency rounds (the backend's
    device wait included) against the same step in a bare loop.

    The bare rounds are interleaved with the timer's, so a noisy neighbour
    or a frequency change slows both sides alike; timed in separate blocks the
    two medians once differed by 7% on a quiet CI machine."""
    output = tb.tensor(np.ones((4, 4), "float32"))
    step = Step(run=lambda: (_spin(100e-6), output)[1], sync=RUNNER.sync_function(), eager=lambda: None)
    timer = timing.for_runner(RUNNER, "warm", cap_s=1.0)
    rounds = timer.latency_rounds(step.run)
    bare: list[float] = []
    harness: list[float] = []
    for index in range(3100):
        start = time.perf_counter()
        step.sync(step.run())
        elapsed = time.perf_counter() - start
        timed = rounds(1)
        if index >= 100:  # warm-up
            bare.append(elapsed)
            harness += timed
    assert statistics.median(harness) < statistics.median(bare) * 1.05, (statistics.median(harness),
                                                                         statistics.median(bare))
    assert timing.harness_overhead(step.sync) < 5e-6


def _measured(case: Case):
    module = registry.build(case.layer, **case.params())
    shape = (case.batch, case.resolution, case.resolution, case.channels)
    module.build(shape)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    g = np.ones(tuple(module.compute_output_shape(shape)), "float32")
    return RUNNER.prepare(case, module, x, g, "float32")


def _case(**changes) -> Case:
    base = dict(layer="conv2d", implementation="keras", kernel_size=3, stride=1, groups=0, reduction_ratio=0,
                resolution=16, channels=32, batch=2, dtype="float32", mode="inference", jit=False)
    return Case(**(base | changes))


def _analytic(case: Case):
    return counting.layer_figures(case.layer, case.implementation, batch=case.batch, resolution=case.resolution,
                                  channels=case.channels, kernel_size=case.kernel_size, stride=case.stride,
                                  groups=case.groups, reduction_ratio=case.reduction_ratio, mode=case.mode)


def test_conv2d_flops_agree_with_the_framework_counter():
    """TensorFlow's profiler and PyTorch's FlopCounterMode see a whole
    Conv2D; XLA sees it on a CPU but skips the products with zero padding
    (8% of a 3x3 convolution at 16 px, 2% at 64 px)."""
    case = _case(resolution=64, channels=16)
    measured, source = RUNNER.measured_flops(_measured(case))
    assert measured is not None, source
    assert abs(measured / _analytic(case).flops - 1) < 0.05, (measured, _analytic(case).flops, source)


def test_involution_flops_agree_with_xla_cost_analysis():
    """XLA's cost analysis sees the whole involution on a CPU (TensorFlow's
    profiler and PyTorch's counter skip its elementwise aggregation)."""
    if tb.NAME != "jax":
        pytest.skip("XLA cost analysis is the counter that sees the whole involution (JAX backend)")
    case = _case(layer="involution", implementation="shiftsum", kernel_size=7, groups=4, reduction_ratio=4,
                 channels=64, jit=True)
    measured, source = RUNNER.measured_flops(_measured(case))
    analytic = _analytic(case).flops
    assert abs(measured / analytic - 1) < 0.05, (measured, analytic, source)
    # Training: the analytic figure is the ideal 3x the forward pass; the
    # shift-sum's backward also adds each tap's input gradient into the padded
    # input, which XLA counts: more, never less.
    case = _case(**(case.params() | {"mode": "training"}))
    measured, _ = RUNNER.measured_flops(_measured(case))
    assert 1.0 <= measured / _analytic(case).flops < 1.5


# torch.compile keeps its compiled functions, and their recompile limit, for
# the whole process; TensorFlow and JAX compile a new function for each case.
PYTORCH_ONLY = pytest.mark.skipif(tb.NAME != "torch", reason=(
    "torch.compile's per-process recompile limit exists on PyTorch only; tox's PyTorch run (tox -e torch) "
    "runs this test"))


@pytest.fixture
def dynamo_config():
    """The PyTorch runner, with torch._dynamo's settings restored after the
    test (a jit case sets them)."""
    import torch

    from bench.backends import torch as torch_runner

    config = torch._dynamo.config
    with config.patch(recompile_limit=config.recompile_limit,
                      fail_on_recompile_limit_hit=config.fail_on_recompile_limit_hit):
        yield torch_runner


@PYTORCH_ONLY
def test_a_compiled_case_is_compiled_whatever_ran_before(dynamo_config, monkeypatch):
    """Dynamo counts a function's compiled versions per process, and Keras'
    layers share their `__call__`: at a limit of 2, the fifth of these cases
    passed it (and would have run eagerly) until each case started from a
    reset."""
    monkeypatch.setattr(dynamo_config, "RECOMPILE_LIMIT", 2)
    for layer, mode, resolution, channels in [("conv2d", "inference", 8, 4), ("depthwise", "training", 12, 8),
                                              ("conv2d", "training", 16, 4), ("depthwise", "inference", 10, 6),
                                              ("conv2d", "inference", 6, 2)]:
        step = _measured(_case(layer=layer, mode=mode, resolution=resolution, channels=channels, jit=True))
        step.round()
        step.round()


@PYTORCH_ONLY
def test_a_case_past_the_recompile_limit_is_an_error_not_eager(dynamo_config, monkeypatch):
    """A case that passes the limit fails in one line instead of timing
    partly eager code. Since the involution layer compiles as one graph
    (docs/PERF.md, section 29) its Keras sublayers no longer take versions of
    their shared `__call__` (they passed a limit of 1 before), so the limit
    here is 0, which the case's first compilation passes."""
    monkeypatch.setattr(dynamo_config, "RECOMPILE_LIMIT", 0)
    step = _measured(_case(layer="involution", implementation="shiftsum", kernel_size=3, groups=1,
                           reduction_ratio=4, resolution=8, channels=4, jit=True))
    with pytest.raises(RuntimeError, match=r"raise bench.backends.torch.RECOMPILE_LIMIT or time it with jit "
                                           r"off. Received: recompile_limit=0$"):
        step.round()


@PYTORCH_ONLY
def test_a_process_first_compiled_case_compiles_once():
    """Keras creates its call-context attribute at a process's first layer
    call; a compiled first call guarded on its absence and compiled again at
    the second. In a fresh process (this one has called layers), the
    runner's compiled step compiles one graph, once."""
    code = textwrap.dedent("""
        import keras, torch
        from torch._dynamo.utils import counters
        from bench.backends.torch import _compiled
        layer = keras.layers.Dense(3)
        layer.build((2, 4))
        x = torch.ones(2, 4)
        step = _compiled(lambda: layer(x))
        step()
        first = counters["stats"]["unique_graphs"]
        step()
        print(first, counters["stats"]["unique_graphs"])
    """)
    # bench_env keeps the PYTHONPATH the tests run with (the GPU machine's
    # Keras comes on it).
    env = {**bench_env(), "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]


def _unfused():
    return [impl for impl in aggregation.names(tb.NAME) if not aggregation.get(impl).fused]


@pytest.mark.parametrize("layer, implementation, mode", [
    ("conv2d", "keras", "inference"), ("depthwise", "keras", "inference"), ("conv2d", "keras", "training"),
    *[("involution", impl, "inference") for impl in _unfused()],
])
def test_measured_peak_holds_the_steps_output(layer, implementation, mode):
    """Whatever the backend's allocator does after warm-up, the peak of a
    step is at least its output and, in training, the gradients of its input
    and weights that it returns; `reference` also holds its (B, H, W, K*K, C)
    patch tensor. (A training floor of output and gradients together failed
    once on TensorFlow by the 256 B of Conv2D's bias gradient.)"""
    involution = layer == "involution"
    case = _case(layer=layer, implementation=implementation, kernel_size=7, groups=4 if involution else 0,
                 reduction_ratio=4 if involution else 0, channels=64, resolution=32, batch=4, mode=mode,
                 jit=DEFAULT_JIT[tb.NAME] is True)
    step = _measured(case)
    for _ in range(3):  # warm: pools and caches filled, as in a sweep
        step.round()
    peak, source = RUNNER.peak_memory(step)
    module = registry.build(case.layer, **case.params())
    module.build((4, 32, 32, 64))
    row = {"peak_memory_bytes": peak, "peak_memory_source": source,
           "trainable_params": sum(int(np.prod(w.shape)) for w in module.trainable_weights)}
    check = memory_check(case, (4, 32, 32, 64), row)
    assert check["peak_memory_valid"], (case.id, check["peak_memory_invalid_reason"])
    if implementation == "reference":
        assert peak >= _analytic(case).largest_intermediate_bytes, (peak, source)


