"""PyTorch runner.

jit on: `torch.compile` of the step; jit off: eager. On CUDA each round ends
with `torch.cuda.synchronize()`; CPU kernels run synchronously.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os

import keras
import numpy as np
import torch
from keras.src.backend.torch.core import get_device

from bench import machine, memory, timing
from bench.backends import NO_DEVICE_CLOCK, Runner, Step
from bench.cases import Case

# How many compiled versions of one function Dynamo keeps in a case (its
# default: 8). Keras' layers share their `__call__` code and Dynamo guards on
# the layer and its input's shape, so each layer of a model takes a version:
# the Keras example's involution model needs more than 8.
RECOMPILE_LIMIT = 64


@functools.cache
def _keras_call_context() -> None:
    """Keras creates its global call-context attribute at a process's first
    layer call. A first call that is compiled guards on its absence, so the
    process's first compiled case compiled again at its second call (2.5 to
    3.6 s on the 2-core CPU; docs/PERF.md, section 29): one eager call of a
    trivial layer creates it first."""
    keras.layers.Identity()(torch.zeros(1))


def _compiled(fn):
    """`torch.compile(fn)` for one case, as if in a fresh process, that fails
    rather than runs eagerly in part.

    Dynamo's compiled code and its recompile limits are per process: with
    Keras' `__call__` compiled for every earlier case's layers, later cases
    passed the limit and ran eagerly without a word (an involution training
    step at 56 px: 65 ms alone, 451 ms after three other cases; docs/PERF.md,
    section 27).
    Each case now starts from `torch._dynamo.reset()` (the disk caches stay),
    and a case that still passes `RECOMPILE_LIMIT` is an error row."""
    _keras_call_context()
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    compiled = torch.compile(fn)

    def run():
        try:
            return compiled()
        except torch._dynamo.exc.FailOnRecompileLimitHit as error:
            raise RuntimeError(
                f"torch.compile recompiled one function of this case more than {RECOMPILE_LIMIT} times, past "
                "which it would run eagerly: the case cannot be timed as compiled (jit on); raise "
                f"bench.backends.torch.RECOMPILE_LIMIT or time it with jit off. Received: "
                f"recompile_limit={RECOMPILE_LIMIT}") from error

    return run


class TorchRunner(Runner):
    name = "torch"

    def device_kind(self) -> str:
        return "gpu" if torch.cuda.is_available() else "cpu"

    def device_name(self) -> str:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else machine.cpu_model()

    def configure(self, tf32: bool) -> str:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32  # on by default in PyTorch for convolutions
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        return "float32 matmul/conv: TF32 allowed" if tf32 else "float32 matmul/conv: full FP32 (TF32 off)"

    def configure_threads(self, threads: int) -> str:
        torch.set_num_threads(threads)
        return f"torch.set_num_threads({threads}), inter-op default"

    def versions(self) -> dict[str, str]:
        versions = super().versions() | {"torch": torch.__version__, "torch_cuda": str(torch.version.cuda)}
        try:
            import triton

            versions["triton"] = triton.__version__
        except ImportError:
            pass
        return versions

    def sync_function(self):
        if torch.cuda.is_available():
            def sync(_):
                torch.cuda.synchronize()
        else:
            def sync(_):  # CPU kernels return when done
                return None
        return sync

    def device_timing(self):
        if not torch.cuda.is_available():
            return None, NO_DEVICE_CLOCK
        return timing.EventTiming(lambda: torch.cuda.Event(enable_timing=True), torch.cuda.synchronize), ""

    def l2_bytes(self) -> int | None:
        if not torch.cuda.is_available():
            return None
        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)) or super().l2_bytes()

    def l2_flush(self) -> timing.Flush | None:
        if not torch.cuda.is_available():
            return None
        l2 = self.l2_bytes()
        nbytes = timing.flush_bytes(l2)
        buffer = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        return timing.Flush(run=buffer.zero_, nbytes=nbytes, l2_bytes=l2)

    def autotuner_choices(self):
        if self.device_kind() != "gpu":
            return None, "none: a CPU run (Triton's interpreter runs the kernels, untuned)"
        from layers.aggregation import triton_kernels

        return triton_kernels.autotuner_choices(), "Triton's autotuner, in this process"

    def prepare(self, case: Case, module, x: np.ndarray, cotangent: np.ndarray, dtype: str) -> Step:
        device = get_device()
        xt = torch.tensor(x, device=device).to(getattr(torch, dtype))
        gt = torch.tensor(cotangent, dtype=torch.float32, device=device)

        if case.mode == "inference":
            def fn():
                with torch.no_grad():
                    return module(xt, training=False)
        else:
            weights = [v.value for v in module.trainable_variables]
            inputs = [xt] if case.kind == "layer" else []
            if inputs:
                xt.requires_grad_(True)

            def fn():
                y = module(xt, training=True)
                loss = (y.float() * gt).sum()
                return torch.autograd.grad(loss, [*inputs, *weights])

            def counted():
                # FlopCounterMode tracks modules with multi-grad hooks, which
                # autograd.grad refuses; backward() computes the same gradients.
                y = module(xt, training=True)
                (y.float() * gt).sum().backward(inputs=[*inputs, *weights])
                for tensor in (*inputs, *weights):
                    tensor.grad = None

        return Step(run=_compiled(fn) if case.jit else fn, sync=self.sync_function(),
                    eager=fn if case.mode == "inference" else counted, info={"device": device})

    def compiles(self, case: Case) -> bool:
        """torch.compile (jit on) and the Triton kernels compile; eager
        PyTorch and cuDNN do not. `auto` may choose Triton on a GPU."""
        from layers.aggregation import IMPLEMENTATIONS

        implementation = IMPLEMENTATIONS.get(case.implementation)
        return case.jit or case.implementation == "auto" or bool(implementation and implementation.fused)

    def precompile(self, step: Step) -> None:
        step.round()  # compiles (and autotunes) what the step runs on its first call

    def measured_flops(self, step: Step) -> tuple[float | None, str]:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step.eager()
        return float(counter.get_total_flops()), "torch.utils.flop_counter (convolutions and matmuls only)"

    def peak_memory(self, step: Step) -> tuple[int | None, str]:
        if self.device_kind() == "gpu":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step.round()
            return int(torch.cuda.max_memory_allocated() - before), "torch.cuda.max_memory_allocated"
        return memory.peak_bytes(step.round), memory.SOURCE

    def annotation(self, name: str):
        return torch.profiler.record_function(name)

    @contextlib.contextmanager
    def trace(self, logdir: str):
        """A Chrome/Perfetto trace JSON (TensorBoard's profile plugin cannot
        read PyTorch traces) plus the operator table, in logdir."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        os.makedirs(logdir, exist_ok=True)
        with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
            yield
        prof.export_chrome_trace(os.path.join(logdir, "trace.json"))
        cuda = torch.cuda.is_available()
        rows = []
        for event in prof.key_averages():
            device_us = getattr(event, "self_device_time_total", 0) if cuda else 0
            rows.append({
                "operation": event.key,
                "occurrences": int(event.count),
                "self_time_us": float(device_us or event.self_cpu_time_total),
                "where": "device" if device_us else "host",
            })
        with open(os.path.join(logdir, "ops.json"), "w") as f:
            json.dump(rows, f)


RUNNER = TorchRunner()
