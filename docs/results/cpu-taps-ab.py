"""`shiftsum` with the kernel's taps split in one op (`ops.unstack`, as the
code is now) against one indexing a tap (`kernel[..., tap]`, before `5a2e403`),
in one process, the two alternating round by round by the suite's own timer
(`bench.timing`; docs/PERF.md, sections 25 and 28): the sweep's processes
moved by 8-17% (sigma), as much as the differences sought.

    KERAS_BACKEND=torch python docs/results/cpu-taps-ab.py   # or tensorflow (graphs), jax (jitted)

Both forms are differentiated by the backend: "split" is `shiftsum._forward`,
which since section 26 has its own backward on TensorFlow and JAX (there
`shiftsum.aggregate` would compare that backward instead of the split).
"""


import numpy as np
from _ab import check_and_time, without_jit  # this folder's shared helper (the script's folder is on sys.path)
from keras import backend, ops

from bench import backends, timing
from layers.aggregation import shiftsum
from layers.aggregation._common import padded_input, padded_windows

SECONDS = 6.0  # per case and mode, both forms together
# (batch, size, channels, groups, kernel size, stride)
CASES = [(8, 32, 64, 4, 7, 1), (8, 32, 64, 4, 7, 2), (8, 56, 64, 4, 7, 1), (8, 32, 64, 16, 7, 1),
         (8, 56, 64, 16, 7, 1)]


def indexed(x, kernel, kernel_size, stride, groups):
    """The aggregation as it was: each tap's weights indexed out of the
    kernel. Its windows are read as `split` reads them (split into groups
    once since section 29), so that the two differ in the taps alone."""
    channels = x.shape[-1]
    xp, ho, wo = padded_input(x, kernel_size, stride)  # (B, Hp, Wp, C)
    window = padded_windows(xp, ho, wo, kernel_size, stride, groups)  # window(i, j): (B, Ho, Wo, G, C/G)
    k = ops.reshape(kernel, (-1, ho, wo, groups, 1, kernel_size * kernel_size))  # (B, Ho, Wo, G, 1, K*K)
    out = None
    for i in range(kernel_size):
        for j in range(kernel_size):
            term = window(i, j) * k[..., i * kernel_size + j]
            out = term if out is None else out + term
    return ops.reshape(out, (-1, ho, wo, channels))


def split(x, kernel, kernel_size, stride, groups):
    """The aggregation as it is, forward only: the taps split in one op."""
    xp, ho, wo = padded_input(x, kernel_size, stride)  # (B, Hp, Wp, C)
    return shiftsum._forward(xp, kernel, ho, wo, kernel_size, stride, groups)  # (B, Ho, Wo, C)


def main():
    runner = backends.current()
    runner.configure(tf32=False)
    rng = np.random.default_rng(0)
    for b, size, c, g, k, s in CASES:
        out = -(-size // s)
        x = ops.convert_to_tensor(rng.standard_normal((b, size, size, c)).astype("float32"))
        kernel = ops.convert_to_tensor(rng.standard_normal((b, out, out, g * k * k)).astype("float32"))
        for mode in ("forward", "forward+backward"):
            steps = {name: without_jit(lambda x, kk, f=f, k=k, s=s, g=g: f(x, kk, k, s, g), mode != "forward")
                     for name, f in (("indexed", indexed), ("split", split))}
            timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
            before, after = check_and_time(steps, (x, kernel), timer, SECONDS, tolerance=1e-4).values()
            print(f"{backend.backend()} {size} px, {g} groups, stride {s}, {mode}: indexed {before:.2f} ms, "
                  f"split {after:.2f} ms ({after / before:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
