"""TensorFlow runner.

jit on: `tf.function(jit_compile=True)` (XLA); jit off: `tf.function` (a
TensorFlow graph without XLA, how Keras runs on a CPU-only machine).
TensorFlow executes synchronously on a CPU (the default), so a step's
outputs exist when the call returns; on a GPU each round ends with
`tf.test.experimental.sync_devices()`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from bench import machine, memory, timing
from bench.backends import NO_DEVICE_CLOCK, Runner, Step
from bench.cases import Case


class TensorFlowRunner(Runner):
    name = "tensorflow"

    def __init__(self):
        # Allocate GPU memory as needed, so that the allocator's peak reflects
        # the step and not a reservation of the whole card.
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised
                pass

    def device_kind(self) -> str:
        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"

    def device_name(self) -> str:
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        return machine.cpu_model()

    def configure(self, tf32: bool) -> str:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
        if self.device_kind() == "cpu" and not tf.config.experimental.get_synchronous_execution():
            raise RuntimeError("TensorFlow runs asynchronously: timings on CPU would not wait for the work")
        return "float32 matmul/conv: TF32 allowed" if tf32 else "float32 matmul/conv: full FP32 (TF32 off)"

    def configure_threads(self, threads: int) -> str:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError as error:  # the runtime started already
            return f"intra-op threads not set ({error})"
        return f"tf.config.threading intra-op threads {threads}, inter-op default"

    def versions(self) -> dict[str, str]:
        info = tf.sysconfig.get_build_info()
        return super().versions() | {
            "tensorflow": tf.__version__,
            "tensorflow_cuda": str(info.get("cuda_version", "")),
            "tensorflow_cudnn": str(info.get("cudnn_version", "")),
        }

    def sync_function(self):
        if self.device_kind() == "gpu":
            def sync(_):
                tf.test.experimental.sync_devices()
        else:
            # Synchronous execution (checked in configure): the call returned
            # after the work; sync_devices() would cost ~60 us a round here.
            def sync(_):
                return None
        return sync

    def device_timing(self):
        if self.device_kind() != "gpu":
            return None, NO_DEVICE_CLOCK
        return timing.BackToBackTiming(self.sync_function(),
                                       source="n steps dispatched back to back per round, round time / n"), ""

    def l2_flush(self) -> timing.Flush | None:
        if self.device_kind() != "gpu":
            return None
        l2 = self.l2_bytes()
        nbytes = timing.flush_bytes(l2)
        with tf.device("/GPU:0"):
            buffer = tf.Variable(tf.zeros((nbytes // 4,), tf.int32))
        bump = tf.function(lambda: buffer.assign_add(tf.ones_like(buffer)))  # reads and writes the buffer
        bump()  # traced outside any timed round
        return timing.Flush(run=bump, nbytes=nbytes, l2_bytes=l2)

    def prepare(self, case: Case, module, x: np.ndarray, cotangent: np.ndarray, dtype: str) -> Step:
        device = "/GPU:0" if self.device_kind() == "gpu" else "/CPU:0"
        with tf.device(device):
            xt = tf.identity(tf.cast(tf.constant(x), dtype))
            gt = tf.identity(tf.constant(cotangent, tf.float32))
        is_layer = case.kind == "layer"

        if case.mode == "inference":

            def fn(x):
                return module(x, training=False)
        else:
            weights = module.trainable_variables

            def fn(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = module(x, training=True)
                    loss = tf.reduce_sum(tf.cast(y, tf.float32) * gt)
                return tape.gradient(loss, [x, *weights] if is_layer else weights)

        graph_fn = tf.function(fn)
        compiled = tf.function(fn, jit_compile=True) if case.jit else graph_fn
        return Step(
            run=lambda: compiled(xt),
            sync=self.sync_function(),
            eager=lambda: fn(xt),
            info={"graph_fn": graph_fn, "x": xt, "device": device},
        )

    def measured_flops(self, step: Step) -> tuple[float | None, str]:
        from tensorflow.python.profiler import model_analyzer, option_builder

        graph = step.info["graph_fn"].get_concrete_function(step.info["x"]).graph
        options = option_builder.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        total = model_analyzer.profile(graph, options=options).total_float_ops
        return float(total), "tf.profiler on the TF graph (ops with registered FLOP statistics only)"

    def _allocator_peak(self, device: str, step: Step) -> int | None:
        """Peak bytes TensorFlow's allocator of `device` held during one step,
        above what it held before (None where it keeps no statistics)."""
        try:
            tf.config.experimental.reset_memory_stats(device)
            before = tf.config.experimental.get_memory_info(device)["current"]
        except (ValueError, RuntimeError, tf.errors.OpError):
            return None
        step.round()
        return int(tf.config.experimental.get_memory_info(device)["peak"] - before)

    def peak_memory(self, step: Step) -> tuple[int | None, str]:
        if self.device_kind() == "gpu":
            return (self._allocator_peak("GPU:0", step),
                    "tf.config.experimental.get_memory_info (GPU allocator peak)")
        # On CPUs where TensorFlow runs oneDNN, its allocator pools memory (a
        # BFC allocator): after warm-up a step reuses freed buffers without
        # calling malloc, and memray sees almost nothing. The allocator's own
        # statistics see those tensors; memray sees what is malloc'd outside
        # it. The larger of the two is the step's peak.
        allocator = self._allocator_peak("CPU:0", step)
        traced = memory.peak_bytes(step.round)
        if allocator is None:
            return traced, memory.SOURCE + "; TensorFlow's CPU allocator keeps no statistics here"
        return max(allocator, traced), (f"the larger of TensorFlow's CPU allocator peak "
                                        f"(tf.config.experimental.get_memory_info: {allocator:,} B) and memray "
                                        f"(allocations during one step: {traced:,} B)")

    def annotation(self, name: str):
        return tf.profiler.experimental.Trace(name)

    @contextlib.contextmanager
    def trace(self, logdir: str):
        tf.profiler.experimental.start(logdir)
        try:
            yield
        finally:
            tf.profiler.experimental.stop()


RUNNER = TensorFlowRunner()
