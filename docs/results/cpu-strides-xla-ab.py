"""TensorFlow's `xla` aggregation with the stride-phase windows against the
stepped slices, in one process, the two forms alternating round by round
(docs/PERF.md, section 25): the sweep's processes moved by 15% (sigma), more
than the difference sought.

    KERAS_BACKEND=tensorflow python docs/results/cpu-strides-xla-ab.py
"""

import os
import time

import numpy as np

os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf  # noqa: E402

from layers.aggregation import _common, shiftsum  # noqa: E402

B, C, G, K, ROUNDS = 8, 64, 4, 7, 25


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
            times = {key: [] for key in steps}
            for r in range(ROUNDS + 1):
                for key, step in steps.items():
                    start = time.perf_counter()
                    tf.nest.map_structure(lambda t: t.numpy(), step(x, kernel))
                    if r:  # the first round compiles
                        times[key].append(time.perf_counter() - start)
            for mode in ("forward", "forward+backward"):
                stepped, phased = (np.median(times[mode, p]) * 1e3 for p in (False, True))
                print(f"{size} px, stride {stride}, {mode}: stepped slices {stepped:.2f} ms, "
                      f"stride phases {phased:.2f} ms ({phased / stepped:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
