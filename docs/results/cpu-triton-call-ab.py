"""PyTorch's host-side cost of calling the Triton aggregation, the kernels
themselves left out, eager, forward and forward + backward, in one process,
rounds alternating (`bench.timing.Timer.alternating`), three ways:
- before: the autograd Function behind `torch.compiler.disable` that the
  custom operators replaced (as it was at 5ee3d14, restated below);
- operator: the custom operator (`triton_torch.OPERATORS`) called eagerly;
- now: `triton_torch.aggregate` as a layer calls it eagerly (the launch
  functions themselves, in an autograd Function; the operator only under
  torch.compile). docs/PERF.md, section 30.
Each alone, then in the `Involution` layer's eager step (`triton`, the
aggregation swapped in its module), inference and training (the input's and
the weights' gradients).

`triton_kernels.launch` is replaced by a recorder that, while timed, records
nothing: nothing is launched, so what is timed is the Python and the dispatch
around the launches, the part of a GPU step's host time that the change
touches (a launch by Triton's own launcher comes on top, alike for all three). The forms are first checked to
make the same launches, with the same grids and arguments.

    KERAS_BACKEND=torch python docs/results/cpu-triton-call-ab.py
"""

from __future__ import annotations

import json

import numpy as np
import torch

from bench import backends, timing
from layers import Involution
from layers.aggregation import triton_kernels as tk
from layers.aggregation import triton_torch
from layers.aggregation._common import Geometry

# (batch, resolution, channels, groups) at K = 7, stride 1: the RedNet stages' channels and groups on
# small tensors. The launch arguments do not depend on the size, and on a CPU every large torch.empty
# is a fresh mapping from the system allocator (20 us for 39 MB here), which would be timed instead:
# on a GPU PyTorch's caching allocator serves it.
CASES = [(1, 8, 64, 4), (1, 8, 128, 8), (1, 8, 256, 16)]
K = 7
SECONDS = 10.0


class _BeforeAggregation(torch.autograd.Function):
    """`triton_torch.InvolutionAggregation` as it was before the custom operators."""

    @staticmethod
    def forward(ctx, x, kernel, kernel_size, stride, groups):
        tk.check_size("triton", x.shape, kernel.shape)
        x, kernel = x.contiguous(), kernel.contiguous()
        geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
        out = torch.empty((geo.batch, geo.out_height, geo.out_width, geo.channels), device=x.device, dtype=x.dtype)
        tk.launch(triton_torch._kernels(x).forward, geo, geo.out_pixels, groups * geo.channel_blocks,
                  x_ptr=x, k_ptr=kernel, o_ptr=out, n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, **tk.sizes(geo))
        ctx.save_for_backward(x, kernel)
        ctx.geometry = geo
        return out

    @staticmethod
    def backward(ctx, dy):
        x, kernel = ctx.saved_tensors
        geo, dy, kernels = ctx.geometry, dy.contiguous(), triton_torch._kernels(x)
        dk = torch.empty_like(kernel, dtype=torch.float32 if tk.kernel_grad_in_float32(geo) else kernel.dtype)
        tk.launch(kernels.kernel_grad, geo, geo.out_pixels, geo.groups,
                  x_ptr=x, dy_ptr=dy, dk_ptr=dk, n_pix=geo.out_pixels, **tk.sizes(geo))
        dx = torch.empty_like(x)
        tk.launch(kernels.input_grad, geo, geo.phase_pixels, geo.groups * geo.channel_blocks,
                  k_ptr=kernel, dy_ptr=dy, dx_ptr=dx, n_pix=geo.phase_pixels, N_CBLK=geo.channel_blocks,
                  **tk.sizes(geo))
        return dx, dk.to(kernel.dtype), None, None, None


@torch.compiler.disable
def _before(x, kernel, kernel_size: int, stride: int, groups: int):
    return _BeforeAggregation.apply(x, kernel, kernel_size, stride, groups)


FORMS = {"before": _before, "operator": triton_torch.OPERATORS.aggregate, "now": triton_torch.aggregate}
launches: list[tuple] = []
recording = [False]  # only while the forms are checked: timed, a launch is a bare function call


def _record(kernel, geo, pixels, programs, **arguments):
    if not recording[0]:
        return
    launches.append((tk._source(kernel).__name__, geo, pixels, programs,
                     tuple((name, tuple(v.shape) if isinstance(v, torch.Tensor) else v)
                           for name, v in sorted(arguments.items()))))


def _step(form: str, x, kernel, dy, training: bool):
    fn = FORMS[form]
    if not training:
        return lambda: fn(x, kernel, K, 1, groups_of(kernel))
    return lambda: torch.autograd.grad(fn(x, kernel, K, 1, groups_of(kernel)), [x, kernel], dy)


def groups_of(kernel) -> int:
    return kernel.shape[-1] // (K * K)


def _layer_step(form: str, layer, x, training: bool):
    """The Involution layer's eager step (`triton`) with the aggregation called
    `form`'s way (swapped in the module the registry gives the layer)."""
    fn = FORMS[form]
    weights = [v.value for v in layer.trainable_variables]

    def run():
        triton_torch.aggregate = fn
        if not training:
            with torch.no_grad():
                return layer(x, training=False)
        return torch.autograd.grad(layer(x, training=True).sum(), [x, *weights])

    return run


def _time(steps: dict, timer, case: str, mode: str) -> None:
    made = {}
    recording[0] = True
    for form, run in steps.items():
        launches.clear()
        run()
        made[form] = sorted(launches, key=repr)
    recording[0] = False
    if any(launched != made["now"] for launched in made.values()):
        raise RuntimeError(f"the forms launch differently at {case} ({mode})")
    for _ in range(3):
        for run in steps.values():
            run()
    times = timer.alternating(steps, SECONDS)
    row = {"case": case, "mode": mode, "launches": len(made["now"])}
    for form in FORMS:
        row[f"{form}_us"] = round(float(np.median(times[form])) * 1e6, 1)
    for form in ("operator", "now"):
        row[f"{form}_minus_before_us"] = round(row[f"{form}_us"] - row["before_us"], 1)
    row["rounds"] = min(len(t) for t in times.values())
    print(json.dumps(row), flush=True)


def main():
    launch, tk.launch = tk.launch, _record
    try:
        _main()
    finally:  # as it was (a test runs this script in the tests' process)
        tk.launch, triton_torch.aggregate = launch, FORMS["now"]


def _main():
    runner = backends.current()
    runner.configure(tf32=False)
    timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
    rng = np.random.default_rng(0)
    for b, size, c, g in CASES:
        x = torch.tensor(rng.standard_normal((b, size, size, c)), dtype=torch.float32, requires_grad=True)
        kernel = torch.tensor(rng.standard_normal((b, size, size, g * K * K)), dtype=torch.float32,
                              requires_grad=True)
        dy = torch.ones((b, size, size, c))
        case = f"B{b} {size}px C{c} G{g} K{K}"
        for mode in ("inference", "training"):
            _time({form: _step(form, x, kernel, dy, mode == "training") for form in FORMS}, timer, case, mode)
        layer = Involution(K, groups=g, implementation="triton")
        layer.build(x.shape)
        for mode in ("inference", "training"):
            _time({form: _layer_step(form, layer, x, mode == "training") for form in FORMS}, timer, case,
                  f"layer {mode}")

if __name__ == "__main__":
    main()
