"""TensorFlow's `xla` aggregation with the stride-phase windows against the
stepped slices, in one process, the two forms alternating round by round by
the suite's own timer (`bench.timing`; docs/PERF.md, sections 25 and 28):
the sweep's processes moved by 15% (sigma), more than the difference sought.

    KERAS_BACKEND=tensorflow python docs/results/cpu-strides-xla-ab.py

The forward and `shiftsum`'s own backward (section 26) both read their
windows through `padded_windows`; the stepped form swaps it, while each
function is traced, for the stepped slices the other backends take.
"""

import contextlib
import functools
import os

import numpy as np

os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf  # noqa: E402

from bench import backends, timing  # noqa: E402
from layers.aggregation import shiftsum  # noqa: E402

B, C, G, K = 8, 64, 4, 7
SIZES, STRIDES = (32, 56), (2, 3)
SECONDS = 8.0  # per size, stride and mode, both forms together


def stepped_windows(xp, ho, wo, kernel_size, stride, groups=None):
    """`window(i, j)` as a slice with a step, as JAX and PyTorch take it
    (with `groups`, the channels split into groups first, as there)."""
    if groups is not None:
        shape = tf.shape(xp)
        xp = tf.reshape(xp, [shape[0], shape[1], shape[2], groups, xp.shape[-1] // groups])

    def window(i, j):
        return xp[:, i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride]

    return window


@contextlib.contextmanager
def windows(phases: bool):
    """`shiftsum` reads its windows by stride phase (phases=True, as it is)
    or as stepped slices, in what is traced inside the block."""
    real = shiftsum.padded_windows
    if not phases:
        shiftsum.padded_windows = stepped_windows
    try:
        yield
    finally:
        shiftsum.padded_windows = real


def main():
    runner = backends.current()
    runner.configure(tf32=False)
    rng = np.random.default_rng(0)
    for size in SIZES:
        for stride in STRIDES:
            out = -(-size // stride)
            x = tf.constant(rng.standard_normal((B, size, size, C)), tf.float32)
            kernel = tf.constant(rng.standard_normal((B, out, out, G * K * K)), tf.float32)
            steps = {}
            for phases in (False, True):
                def forward(a, k, p=phases, s=stride):
                    with windows(p):
                        return shiftsum.aggregate(a, k, K, s, G)

                def backward(a, k, p=phases, s=stride):
                    with windows(p):  # the backward is traced at tape.gradient
                        with tf.GradientTape() as tape:
                            tape.watch([a, k])
                            y = shiftsum.aggregate(a, k, K, s, G)
                        return tape.gradient(y, [a, k], output_gradients=y)

                steps["forward", phases] = tf.function(forward, jit_compile=True)

                steps["forward+backward", phases] = tf.function(backward, jit_compile=True)
            results = {key: [t.numpy() for t in tf.nest.flatten(step(x, kernel))] for key, step in steps.items()}
            for mode in ("forward", "forward+backward"):  # the two forms compute the same
                for a, b in zip(results[mode, False], results[mode, True], strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
            timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
            for mode in ("forward", "forward+backward"):
                times = timer.alternating({p: functools.partial(steps[mode, p], x, kernel) for p in (False, True)},
                                          SECONDS)
                stepped, phased = (np.median(times[p]) * 1e3 for p in (False, True))
                print(f"{size} px, stride {stride}, {mode}: stepped slices {stepped:.2f} ms, "
                      f"stride phases {phased:.2f} ms ({phased / stepped:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
