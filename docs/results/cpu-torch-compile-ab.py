"""PyTorch on a CPU: `shiftsum`'s aggregation eager against compiled by
`torch.compile`, timed in one process with the forms alternating round by
round by the suite's own timer (`bench.timing`, each round ending with the
backend's wait; docs/PERF.md, section 27).

    KERAS_BACKEND=torch python docs/results/cpu-torch-compile-ab.py inference
    KERAS_BACKEND=torch python docs/results/cpu-torch-compile-ab.py training

Forms: "eager" is `shiftsum` as the layer runs it (PyTorch differentiates
`_forward`); "compiled" is the same function under `torch.compile`
(TorchInductor differentiates it); "compiled_own" compiles `_forward` and
`shiftsum._backward` separately inside an autograd Function (the backward
pass TensorFlow and JAX use). Each is checked against "eager" first. Two
threads; one JSON line per case, with each form's first call (its
compilation) in seconds.
"""

from __future__ import annotations

import functools
import json
import sys
import time

import numpy as np
import torch

from bench import backends, timing
from layers.aggregation import shiftsum
from layers.aggregation._common import padded_input

# (batch, resolution, channels, groups, K, stride): RedNet stages 1 and 3, and a strided case
CASES = [(8, 56, 64, 4, 7, 1), (8, 14, 256, 16, 7, 1), (8, 32, 64, 4, 7, 2)]
SECONDS = 10.0  # per case, all forms together
forward_compiled = torch.compile(shiftsum._forward, dynamic=False)
backward_compiled = torch.compile(shiftsum._backward, dynamic=False)


class _Own(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, kernel, ho, wo, k, s, g):
        ctx.save_for_backward(xp, kernel)
        ctx.geometry = (ho, wo, k, s, g)
        return forward_compiled(xp, kernel, ho, wo, k, s, g)

    @staticmethod
    def backward(ctx, dy):
        return (*backward_compiled(*ctx.saved_tensors, dy, *ctx.geometry), None, None, None, None, None)


def eager(x, kernel, k, s, g):
    xp, ho, wo = padded_input(x, k, s)  # (B, Hp, Wp, C)
    return shiftsum._forward(xp, kernel, ho, wo, k, s, g)  # (B, Ho, Wo, C)


def compiled_own(x, kernel, k, s, g):
    xp, ho, wo = padded_input(x, k, s)
    return _Own.apply(xp, kernel, ho, wo, k, s, g)


FORMS = {"eager": eager, "compiled": torch.compile(eager, dynamic=False), "compiled_own": compiled_own}


def run(form, mode: str, x, kernel, dy, k: int, s: int, g: int) -> list:
    """One call of `form`: its output (inference), or the gradients of x and the kernel (training)."""
    if mode == "inference":
        with torch.no_grad():
            return [form(x, kernel, k, s, g)]
    u, v = x.detach().requires_grad_(), kernel.detach().requires_grad_()
    return list(torch.autograd.grad(form(u, v, k, s, g), [u, v], dy))


def main(mode: str) -> None:
    runner = backends.current()
    runner.configure(tf32=False)  # the sweep's precision policy, as the other A/B scripts
    torch.set_num_threads(2)
    for b, h, c, g, k, s in CASES:
        rng = np.random.default_rng(0)
        ho = -(-h // s)
        x, kernel, dy = (torch.tensor(rng.standard_normal(shape).astype("float32"))
                         for shape in [(b, h, h, c), (b, ho, ho, g * k * k), (b, ho, ho, c)])
        arrays = (mode, x, kernel, dy, k, s, g)
        expected = run(eager, *arrays)
        first_call = {}
        for name, form in FORMS.items():
            started = time.perf_counter()
            actual = run(form, *arrays)
            first_call[name] = time.perf_counter() - started
            error = max(float((a - e).norm() / e.norm()) for a, e in zip(actual, expected, strict=True))
            assert error < 1e-5, (name, error)
        timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
        times = timer.alternating({name: functools.partial(run, form, *arrays) for name, form in FORMS.items()},
                                  SECONDS)
        print(json.dumps({"mode": mode, "case": f"B{b} {h}px C{c} G{g} K{k} s{s}", "rounds": len(times["eager"]),
                          **{f"{n}_ms": round(float(np.median(t)) * 1e3, 2) for n, t in times.items()},
                          **{f"{n}_first_call_s": round(t, 1) for n, t in first_call.items()}}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "inference")
