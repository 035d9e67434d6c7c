"""TensorFlow's `xla` aggregation with the stride-phase windows against the
stepped slices, in one process, the two forms alternating round by round by
the suite's own timer (`bench.timing`; docs/PERF.md, sections 25 and 28):
the sweep's processes moved by 15% (sigma), more than the difference sought.

    KERAS_BACKEND=tensorflow python docs/results/cpu-strides-xla-ab.py
"""

import functools
import os

import numpy as np

os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf  # noqa: E402

from bench import backends, timing  # noqa: E402
from layers.aggregation import _common, shiftsum  # noqa: E402

B, C, G, K = 8, 64, 4, 7
SECONDS = 8.0  # per size, stride and mode, both forms together


def aggregate(x, kernel, stride, phases):
    """`shiftsum`'s aggregation; with phases=False the windows are the
    stepped slices the other backends take (the helper is told it is not on
    TensorFlow while the function is traced)."""
    real = _common.backend.backend
    if not phases:
        _common.backend.backend = lambda: "not-tensorflow"
    try:
        return shiftsum.aggregate(x, kernel, K, stride, G)
    finally:
        _common.backend.backend = real


def main():
    runner = backends.current()
    runner.configure(tf32=False)
    rng = np.random.default_rng(0)
    for size in (32, 56):
        for stride in (2, 3):
            out = -(-size // stride)
            x = tf.constant(rng.standard_normal((B, size, size, C)), tf.float32)
            kernel = tf.constant(rng.standard_normal((B, out, out, G * K * K)), tf.float32)
            steps = {}
            for phases in (False, True):
                steps["forward", phases] = tf.function(
                    lambda a, k, p=phases, s=stride: aggregate(a, k, s, p), jit_compile=True)

                def backward(a, k, p=phases, s=stride):
                    with tf.GradientTape() as tape:
                        tape.watch([a, k])
                        y = aggregate(a, k, s, p)
                    return tape.gradient(y, [a, k], output_gradients=y)

                steps["forward+backward", phases] = tf.function(backward, jit_compile=True)
            for step in steps.values():
                step(x, kernel)  # compiles
            timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
            for mode in ("forward", "forward+backward"):
                times = timer.alternating({p: functools.partial(steps[mode, p], x, kernel) for p in (False, True)},
                                          SECONDS)
                stepped, phased = (np.median(times[p]) * 1e3 for p in (False, True))
                print(f"{size} px, stride {stride}, {mode}: stepped slices {stepped:.2f} ms, "
                      f"stride phases {phased:.2f} ms ({phased / stepped:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
