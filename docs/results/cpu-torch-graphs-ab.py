"""PyTorch on a CPU: the involution layer under `torch.compile` as one graph
(as it is) against the graphs it broke into before `60f16b7`, timed in one
process with the two forms alternating round by round by the suite's own
timer (`bench.timing`, each round ending with the backend's wait;
docs/PERF.md, section 29).

    KERAS_BACKEND=torch python docs/results/cpu-torch-graphs-ab.py

"before" puts back, for its own layer only, what `60f16b7` removed: a graph
break where the layer looks up its aggregation inside the profiler stage
(the `importlib` call was one; inside that generator context manager Dynamo
cannot resume, and runs the rest of the call uncompiled), the batch norm's
axes as Keras' tracked list (the training step's 8 other breaks), and the
windows reshaped one by one (49 `keras.ops.reshape` calls to trace). Both
forms are checked against each other first. One JSON line per case and
mode: each form's graphs (`torch._dynamo.explain`), first call (its
compilation, from TorchInductor's disk cache when warm) and median step.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time

import numpy as np
import torch
from keras import ops
from torch._dynamo.utils import counters

from bench import backends, timing
from bench.backends.torch import RECOMPILE_LIMIT
from layers import Involution, aggregation
from layers.aggregation import shiftsum

# (implementation, batch, resolution, channels, groups): RedNet stages 1 and 3, K 7, reduction 4
CASES = [("shiftsum", 8, 56, 64, 4), ("shiftsum", 8, 14, 256, 16), ("unfold", 8, 56, 64, 4)]
K = 7
MODES = ("inference", "training")
SECONDS = 10.0  # per case and mode, both forms together
# torch.compile's backend. The graphs (where Dynamo breaks them) do not depend on
# it; the timings PERF.md cites are TorchInductor's. The test of this script sets
# "aot_eager", which makes the same graphs without generating code for them.
COMPILER = "inductor"
_BEFORE = {"on": False}  # read while Dynamo traces: it compiles each form under its own value


def _aggregation_lookup(real):
    @functools.wraps(real)
    def function(self):
        if _BEFORE["on"]:
            torch._dynamo.graph_break()  # where importlib.import_module broke the graph
        return real(self)

    return function


def _windows(real):
    @functools.wraps(real)
    def padded_windows(xp, ho, wo, kernel_size, stride, groups=None):
        if not _BEFORE["on"] or groups is None:
            return real(xp, ho, wo, kernel_size, stride, groups)
        window, width = real(xp, ho, wo, kernel_size, stride), xp.shape[-1] // groups
        return lambda i, j: ops.reshape(window(i, j), (-1, ho, wo, groups, width))  # (B, Ho, Wo, G, C/G)

    return padded_windows


aggregation.Implementation.function = _aggregation_lookup(aggregation.Implementation.function)
shiftsum.padded_windows = _windows(shiftsum.padded_windows)


@contextlib.contextmanager
def before(on: bool):
    _BEFORE["on"] = on
    try:
        yield
    finally:
        _BEFORE["on"] = False


def as_form(form: str, fn):
    """fn() with the switch of `form` set, outside the compiled function:
    a graph break under a context manager set inside it would not resume."""
    with before(form == "before"):
        return fn()


def steps(name: str, b: int, size: int, c: int, g: int, mode: str):
    """{form: step}: each form's layer (the same weights) and its compiled step."""
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((b, size, size, c)), dtype=torch.float32, requires_grad=mode == "training")
    dy = torch.tensor(rng.standard_normal((b, size, size, c)), dtype=torch.float32)
    layers = {}
    for form in ("before", "now"):
        layer = Involution(K, groups=g, implementation=name)
        layer.build(x.shape)
        if layers:
            layer.set_weights(layers["before"].get_weights())
        if form == "before":
            layer.bn._reduction_axes = list(layer.bn._reduction_axes)  # Keras tracks it as a TrackedList
        layers[form] = layer

    def step(form):
        layer = layers[form]
        wrt = [x, *(v.value for v in layer.trainable_variables)]  # as the sweep: the input and the weights

        def run():  # as the sweep's step (bench.backends.torch)
            if mode == "inference":
                with torch.no_grad():
                    return [layer(x, training=False)]
            return torch.autograd.grad((layer(x, training=True) * dy).sum(), wrt)

        return run

    return {form: step(form) for form in layers}


def main():
    runner = backends.current()
    runner.configure(tf32=False)
    timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
    for name, b, size, c, g in CASES:
        for mode in MODES:
            eager = steps(name, b, size, c, g, mode)
            row = {"case": f"{name} B{b} {size}px C{c} G{g} K{K}", "mode": mode}
            for form, fn in eager.items():
                row[f"{form}_graphs"] = as_form(form, torch._dynamo.explain(fn)).graph_count
            # As the sweep compiles a case (bench.backends.torch._compiled), both forms in one reset
            torch._dynamo.reset()
            torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
            torch._dynamo.config.fail_on_recompile_limit_hit = True
            compiled, results = {}, {}
            for form, fn in eager.items():
                compiled[form] = functools.partial(as_form, form, torch.compile(fn, backend=COMPILER))
                start = time.perf_counter()
                results[form] = [t.detach().numpy() for t in compiled[form]()]
                row[f"{form}_first_call_s"] = round(time.perf_counter() - start, 2)
            # The forms compute the same, summing in other orders: to within 1e-5 of the largest value (the
            # reduce 1x1's bias gradient, zero but for rounding under the batch norm, is all rounding)
            scale = max(float(np.abs(z).max()) for z in results["now"])
            for a, z in zip(results["before"], results["now"], strict=True):
                np.testing.assert_allclose(a, z, rtol=1e-4, atol=1e-5 * scale)
            for _ in range(3):  # in turn, as timed: whatever the switch between them compiles, compiled now
                for run in compiled.values():
                    run()
            graphs = counters["stats"]["unique_graphs"]
            times = timer.alternating(compiled, SECONDS)
            if counters["stats"]["unique_graphs"] != graphs:
                raise RuntimeError(f"torch.compile compiled again while {row['case']} ({mode}) was timed")
            for form in compiled:
                row[f"{form}_ms"] = round(float(np.median(times[form])) * 1e3, 3)
            row["now_vs_before"] = round(row["now_ms"] / row["before_ms"], 3)
            row["rounds"] = min(len(t) for t in times.values())
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
