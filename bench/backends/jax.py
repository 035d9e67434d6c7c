"""JAX runner.

Layers and models run under a `keras.StatelessScope` with their variables
as arguments, so a step is a pure function: jit on wraps it in `jax.jit`, jit
off runs it op by op. Each round ends with `jax.block_until_ready`.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import keras
import numpy as np

from bench import machine, memory
from bench.backends import Runner, Step
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

    def versions(self) -> dict[str, str]:
        import jaxlib

        return super().versions() | {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def sync_function(self):
        return jax.block_until_ready

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
        else:
            def loss(tv, x, ntv):
                y = apply(tv, x, ntv, True)
                return jnp.sum(y.astype(jnp.float32) * gj)

            fn = jax.grad(loss, argnums=(0, 1) if case.kind == "layer" else 0)

        args = (trainable, xj, non_trainable)
        jitted = jax.jit(fn)
        compiled = jitted if case.jit else fn
        return Step(
            run=lambda: compiled(*args),
            sync=self.sync_function(),
            eager=lambda: fn(*args),
            info={"jitted": jitted, "args": args},
        )

    def _compiled(self, step: Step):
        if "compiled" not in step.info:
            step.info["compiled"] = step.info["jitted"].lower(*step.info["args"]).compile()
        return step.info["compiled"]

    def measured_flops(self, step: Step) -> tuple[float | None, str]:
        analysis = self._compiled(step).cost_analysis()
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
            stats = self._compiled(step).memory_analysis()
            return (int(stats.temp_size_in_bytes + stats.output_size_in_bytes),
                    "XLA compiled memory analysis (temporaries + outputs)")
        return memory.peak_bytes(step.round), memory.SOURCE

    @contextlib.contextmanager
    def trace(self, logdir: str):
        jax.profiler.start_trace(logdir)
        try:
            yield
        finally:
            jax.profiler.stop_trace()


RUNNER = JaxRunner()
