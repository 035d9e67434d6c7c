"""JAX runner.

Layers and models run under a `keras.StatelessScope` with their variables
as arguments, so a step is a pure function: jit on compiles it once
(`jax.jit(...).lower(...).compile()`, timed as the case's compile time), and
the same executable serves the timed rounds, XLA's cost analysis and its
memory analysis; jit off runs it op by op. Each round ends with
`jax.block_until_ready`. JAX has no device events: on GPUs the device time
comes from steps issued back to back (`bench.timing.BackToBackTiming`).
"""

from __future__ import annotations

import contextlib
import time

import jax
import jax.numpy as jnp
import keras
import numpy as np

from bench import machine, memory, timing
from bench.backends import NO_DEVICE_CLOCK, Runner, Step
from bench.cases import Case


class JaxRunner(Runner):
    name = "jax"

    def device_kind(self) -> str:
        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"

    def device_name(self) -> str:
        device = jax.devices()[0]
        return device.device_kind if self.device_kind() == "gpu" else machine.cpu_model()

    def configure(self, tf32: bool) -> str:
        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
        return "float32 matmul/conv: TF32 allowed" if tf32 else "float32 matmul/conv: full FP32 (precision=highest)"

    def configure_threads(self, threads: int) -> str:
        return f"XLA:CPU sizes its pool from the CPU affinity ({threads} core(s)); no intra-op setting"

    def versions(self) -> dict[str, str]:
        import jaxlib

        return super().versions() | {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def sync_function(self):
        return jax.block_until_ready

    def device_timing(self):
        if self.device_kind() != "gpu":
            return None, NO_DEVICE_CLOCK
        return timing.BackToBackTiming(jax.block_until_ready,
                                       source="n jitted steps dispatched back to back per round, round time / n"), ""

    def autotuner_choices(self):
        return None, ("none: jax-triton hands every tile to XLA, which picks one at the first run "
                      "without reporting it")

    def l2_flush(self) -> timing.Flush | None:
        if self.device_kind() != "gpu":
            return None
        l2 = self.l2_bytes()
        nbytes = timing.flush_bytes(l2)
        # Donated: each call rewrites the same buffer in place (read + write).
        bump = jax.jit(lambda b: b + 1, donate_argnums=0)
        state = [jnp.zeros((nbytes // 4,), jnp.uint32)]

        def run():
            state[0] = bump(state[0])
            return state[0]

        jax.block_until_ready(run())  # compiled outside any timed round
        return timing.Flush(run=run, nbytes=nbytes, l2_bytes=l2)

    def prepare(self, case: Case, module, x: np.ndarray, cotangent: np.ndarray, dtype: str) -> Step:
        trainable = [v.value for v in module.trainable_variables]
        non_trainable = [v.value for v in module.non_trainable_variables]

        def apply(tv, x, ntv, training):
            # Through __call__ (not stateless_call, which calls call() and so
            # skips the mixed-precision autocast of the weights), with the
            # variables bound to the step's arguments.
            mapping = [*zip(module.trainable_variables, tv, strict=True),
                       *zip(module.non_trainable_variables, ntv, strict=True)]
            with keras.StatelessScope(state_mapping=mapping):
                return module(x, training=training)

        xj = jax.device_put(jnp.asarray(x, dtype))
        gj = jax.device_put(cotangent.astype(np.float32))

        if case.mode == "inference":
            def fn(tv, x, ntv):
                return apply(tv, x, ntv, False)

            args = (trainable, xj, non_trainable)
        else:
            def loss(tv, x, ntv, g):
                y = apply(tv, x, ntv, True)
                return jnp.sum(y.astype(jnp.float32) * g)

            fn = jax.grad(loss, argnums=(0, 1) if case.kind == "layer" else 0)
            # The cotangent is an argument, not a constant of the program: the
            # executable (and its persistent-cache key) must not depend on its
            # values, or a precompiling worker's would not serve the sweep.
            args = (trainable, xj, non_trainable, gj)
        jitted = jax.jit(fn)
        info = {"jitted": jitted, "args": args}
        if case.jit:
            start = time.perf_counter()
            compiled = jitted.lower(*args).compile()
            info.update(compiled=compiled, compile_seconds=time.perf_counter() - start)

            def run():
                return compiled(*args)
        else:
            def run():
                return fn(*args)
        return Step(run=run, sync=self.sync_function(), eager=lambda: fn(*args), info=info)

    def compiles(self, case: Case) -> bool:
        return True  # every step is an XLA executable, jit on or off (see `compiled`)

    def precompile(self, step: Step) -> None:
        self.compiled(step)  # the executable the sweep's analyses read, jit on or off

    def compiled(self, step: Step):
        """The step's executable (jit off: compiled here for the analyses only)."""
        if "compiled" not in step.info:
            step.info["compiled"] = step.info["jitted"].lower(*step.info["args"]).compile()
        return step.info["compiled"]

    def measured_flops(self, step: Step) -> tuple[float | None, str]:
        analysis = self.compiled(step).cost_analysis()
        if isinstance(analysis, list):  # older JAX: one dict per computation
            analysis = analysis[0] if analysis else {}
        flops = (analysis or {}).get("flops")
        if flops is None or flops < 0:  # XLA reports -1 for library calls (cuDNN) on GPU
            return None, "XLA cost analysis (no figure: it does not see library calls such as cuDNN)"
        return float(flops), "XLA cost analysis of the compiled step"

    def peak_memory(self, step: Step) -> tuple[int | None, str]:
        if self.device_kind() == "gpu":
            # JAX's peak statistic cannot be reset between cases: use what XLA
            # plans for the compiled step instead.
            stats = self.compiled(step).memory_analysis()
            return (int(stats.temp_size_in_bytes + stats.output_size_in_bytes),
                    "XLA compiled memory analysis (temporaries + outputs): a plan, not a measurement")
        return memory.peak_bytes(step.round), memory.SOURCE

    def annotation(self, name: str):
        return jax.profiler.TraceAnnotation(name)

    @contextlib.contextmanager
    def trace(self, logdir: str):
        jax.profiler.start_trace(logdir)
        try:
            yield
        finally:
            jax.profiler.stop_trace()


RUNNER = JaxRunner()
