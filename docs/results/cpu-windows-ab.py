"""`shiftsum` with its windows split into groups once (as it is since
`60f16b7`) against each window reshaped on its own (before), in one process,
the two alternating round by round by the suite's own timer (`bench.timing`;
docs/PERF.md, section 29), each as the backend's sweep runs it without jit
(TensorFlow: a graph; JAX: jitted; PyTorch: eager).

    KERAS_BACKEND=tensorflow python docs/results/cpu-windows-ab.py   # or jax, torch

The change was made for torch.compile's tracing (49 fewer `keras.ops` calls
to trace); this checks what it does to the steps themselves. "per window"
swaps `shiftsum.padded_windows` for one that reshapes each window, in the
forward and in `shiftsum`'s own backward (TensorFlow, JAX) alike, while the
step is traced (TensorFlow, JAX) or run (PyTorch).
"""

import contextlib

import numpy as np
from _ab import check_and_time, without_jit  # this folder's shared helper (the script's folder is on sys.path)
from keras import backend, ops

from bench import backends, timing
from layers.aggregation import shiftsum

SECONDS = 6.0  # per case and mode, both forms together
# (batch, size, channels, groups, kernel size, stride): RedNet stages 1 and 3, and strided
CASES = [(8, 56, 64, 4, 7, 1), (8, 14, 256, 16, 7, 1), (8, 32, 64, 4, 7, 2)]
_SPLIT_ONCE = shiftsum.padded_windows


def _per_window(xp, ho, wo, kernel_size, stride, groups=None):
    window = _SPLIT_ONCE(xp, ho, wo, kernel_size, stride)
    if groups is None:
        return window
    width = xp.shape[-1] // groups
    return lambda i, j: ops.reshape(window(i, j), (-1, ho, wo, groups, width))  # (B, Ho, Wo, G, C/G)


@contextlib.contextmanager
def windows(form: str):
    shiftsum.padded_windows = _per_window if form == "per window" else _SPLIT_ONCE
    try:
        yield
    finally:
        shiftsum.padded_windows = _SPLIT_ONCE


def in_form(form: str, step):
    """step(x, k) with the windows of `form`: while it is traced (TensorFlow,
    JAX: at the first call) or run (eager PyTorch: every call)."""
    def run(x, k):
        with windows(form):
            return step(x, k)

    return run


def main():
    runner = backends.current()
    runner.configure(tf32=False)
    rng = np.random.default_rng(0)
    timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
    for b, size, c, g, k, s in CASES:
        out = -(-size // s)
        x = ops.convert_to_tensor(rng.standard_normal((b, size, size, c)).astype("float32"))
        kernel = ops.convert_to_tensor(rng.standard_normal((b, out, out, g * k * k)).astype("float32"))
        for mode in ("forward", "forward+backward"):
            steps = {form: in_form(form, without_jit(lambda x, kk, k=k, s=s, g=g: shiftsum.aggregate(x, kk, k, s, g),
                                                     mode != "forward"))
                     for form in ("per window", "split once")}
            before, after = check_and_time(steps, (x, kernel), timer, SECONDS, tolerance=1e-5).values()
            print(f"{backend.backend()} {size} px, {g} groups, stride {s}, {mode}: per window {before:.2f} ms, "
                  f"split once {after:.2f} ms ({after / before:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
