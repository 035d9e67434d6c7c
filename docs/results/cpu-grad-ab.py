"""`shiftsum`'s forward and backward, its own gradient against automatic
differentiation of the same forward, timed in one process with the two
alternating round by round by the suite's own timer (`bench.timing`, each
round ending with the backend's wait; docs/PERF.md, sections 26 and 28).

    KERAS_BACKEND=tensorflow python docs/results/cpu-grad-ab.py [xla]
    KERAS_BACKEND=jax python docs/results/cpu-grad-ab.py
    KERAS_BACKEND=torch python docs/results/cpu-grad-ab.py

"autodiff" is the backend differentiating `shiftsum._forward` (the windows
as slices of the padded input: what `shiftsum` was before section 26);
"own" is `shiftsum.aggregate` on TensorFlow and JAX, and on PyTorch (which
kept automatic differentiation) `_forward` with `shiftsum._backward` in an
autograd Function. TensorFlow runs both in a `tf.function`
(`xla`: with `jit_compile=True`, the `xla` implementation's setting), JAX
jitted, PyTorch eagerly on 2 threads, under the sweep's precision policy
(`Runner.configure`: full FP32). Each "own" is checked against "autodiff"
first. One JSON line per case.
"""

from __future__ import annotations

import functools
import json
import sys

import numpy as np
from keras import backend

from bench import backends, timing
from layers.aggregation import shiftsum
from layers.aggregation._common import padded_input

BACKEND = backend.backend()
XLA = sys.argv[1:] == ["xla"]
# (batch, resolution, channels, groups, K, stride)
CASES = [(8, 32, 64, 4, 7, 1), (8, 32, 64, 4, 7, 2), (8, 32, 64, 4, 3, 1), (8, 56, 64, 16, 7, 1),
         (8, 28, 128, 8, 7, 1), (8, 14, 256, 16, 7, 2)]
SECONDS = 12.0  # per case, both forms together


def autodiff(x, kernel, k, s, g):
    xp, ho, wo = padded_input(x, k, s)
    return shiftsum._forward(xp, kernel, ho, wo, k, s, g)


def own(x, kernel, k, s, g):
    if BACKEND != "torch":
        return shiftsum.aggregate(x, kernel, k, s, g)
    import torch

    class Own(torch.autograd.Function):
        @staticmethod
        def forward(ctx, xp, kernel):
            ctx.save_for_backward(xp, kernel)
            return shiftsum._forward(xp, kernel, ho, wo, k, s, g)

        @staticmethod
        def backward(ctx, dy):
            return shiftsum._backward(*ctx.saved_tensors, dy, ho, wo, k, s, g)

    xp, ho, wo = padded_input(x, k, s)
    return Own.apply(xp, kernel)


def step(aggregate, k, s, g):
    """A function of (x, kernel, dy) computing both gradients (the timer waits for them)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=XLA)
        def grads(x, kernel, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = aggregate(x, kernel, k, s, g)
            return tape.gradient(y, [x, kernel], output_gradients=dy)

        return lambda a: grads(*a)
    if BACKEND == "jax":
        import jax

        grads = jax.jit(lambda x, kernel, dy: jax.vjp(lambda u, v: aggregate(u, v, k, s, g), x, kernel)[1](dy))
        return lambda a: grads(*a)
    import torch

    def grads(a):
        x, kernel = (t.detach().requires_grad_() for t in a[:2])
        dy = a[2]
        return torch.autograd.grad(aggregate(x, kernel, k, s, g), [x, kernel], dy)

    return grads


def arrays(b, h, c, g, k, s):
    rng = np.random.default_rng(0)
    ho = -(-h // s)
    shapes = [(b, h, h, c), (b, ho, ho, g * k * k), (b, ho, ho, c)]
    values = [rng.standard_normal(shape).astype("float32") for shape in shapes]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return [tf.constant(v) for v in values]
    if BACKEND == "jax":
        import jax.numpy as jnp

        return [jnp.asarray(v) for v in values]
    import torch

    torch.set_num_threads(2)
    return [torch.tensor(v) for v in values]


def main() -> None:
    runner = backends.current()
    runner.configure(tf32=False)
    for b, h, c, g, k, s in CASES:
        a = arrays(b, h, c, g, k, s)
        forms = {"autodiff": step(autodiff, k, s, g), "own": step(own, k, s, g)}
        for f in forms.values():  # compile and warm up
            f(a)
        expected, actual = ([np.asarray(t) for t in forms[name](a)] for name in ("autodiff", "own"))
        error = max(float(np.linalg.norm(u - e) / np.linalg.norm(e)) for u, e in zip(actual, expected, strict=True))
        assert error < 1e-5, error
        timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
        times = timer.alternating({name: functools.partial(f, a) for name, f in forms.items()}, SECONDS)
        before, after = (float(np.median(times[n])) * 1e3 for n in ("autodiff", "own"))
        print(json.dumps({"backend": BACKEND, "xla": XLA, "case": f"B{b} {h}px C{c} G{g} K{k} s{s}",
                          "rounds": len(times["own"]), "autodiff_ms": round(before, 3), "own_ms": round(after, 3),
                          "ratio": round(after / before, 3)}), flush=True)


if __name__ == "__main__":
    main()
