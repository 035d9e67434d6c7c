"""The involution layer's stride pooling on PyTorch: `layers.pooling` (since
this change: PyTorch's own padding and `ceil_mode`, no copy) against Keras'
`AveragePooling2D` (before: a channels-first copy, and a replication-padded
copy where the stride does not divide the size), in one process, alternating
round by round by the suite's own timer (`bench.timing`; docs/PERF.md,
section 31), eager as PyTorch's sweep runs a step without jit.

    KERAS_BACKEND=torch python docs/results/cpu-pooling-ab.py

Both forms compute the same at stride 2 (a replicated cell averaged with
itself is the cell), which the script checks before timing; at stride 3 and
up Keras' form differs at the edges (layers.pooling), so it is not timed there.
"""

import sys

import numpy as np
import torch
from _ab import check_and_time  # this folder's shared helper (the script's folder is on sys.path)
from keras import backend, ops

from bench import backends, timing
from layers import Involution
from layers.pooling import average_pool_same

SECONDS = 6.0  # per case and step, both forms together
# (batch, size, channels): RedNet's first strided stage, the stride dividing the size and not
CASES = [(8, 56, 64), (8, 57, 64)]
STRIDE = 2
FORMS = {"keras": lambda x, s: ops.average_pool(x, s, s, padding="same"), "layers.pooling": average_pool_same}


def layer_step(layer, training: bool):
    """x -> the layer's output (inference, no gradient recorded), or the
    gradients of sum(output^2) with respect to x and the weights (training)."""
    weights = [v.value for v in layer.trainable_variables]

    def step(x):
        if not training:
            with torch.no_grad():
                return layer(x, training=False)
        x = x.detach().requires_grad_()
        return torch.autograd.grad((layer(x, training=True) ** 2).sum(), [x, *weights])

    return step


def layers_by_form(x) -> dict:
    """One layer a form, the same weights, each pooling `form`'s way (its own
    `_pool`, set here: nothing is swapped while the steps are timed)."""
    made = {}
    for form, pool in FORMS.items():
        layer = Involution(7, strides=STRIDE, groups=4, implementation="shiftsum")
        layer.build(x.shape)
        if made:
            layer.set_weights(next(iter(made.values())).get_weights())
        layer._pool = lambda t, pool=pool: pool(t, STRIDE)
        made[form] = layer
    return made


def pool_step(form: str, training: bool):
    def step(x):
        if not training:
            return FORMS[form](x, STRIDE)
        x = x.detach().requires_grad_()
        return torch.autograd.grad((FORMS[form](x, STRIDE) ** 2).sum(), x)

    return step


def main():
    if backend.backend() != "torch":
        sys.exit(f"cpu-pooling-ab.py: the change is PyTorch's; run with KERAS_BACKEND=torch. "
                 f"Received: KERAS_BACKEND={backend.backend()}")
    runner = backends.current()
    runner.configure(tf32=False)
    rng = np.random.default_rng(0)
    timer = timing.for_runner(runner, "warm", cap_s=SECONDS)
    for b, size, c in CASES:
        x = torch.tensor(rng.standard_normal((b, size, size, c)), dtype=torch.float32)
        layers = layers_by_form(x)
        for what in ("pooling", "layer"):
            for training in (False, True):
                steps = {form: pool_step(form, training) if what == "pooling" else layer_step(layers[form], training)
                         for form in FORMS}
                before, after = check_and_time(steps, (x,), timer, SECONDS, tolerance=1e-5).values()
                mode = "forward+backward" if training else "forward"
                print(f"torch {size} px, stride {STRIDE}, {what}, {mode}: keras {before:.3f} ms, "
                      f"layers.pooling {after:.3f} ms ({after / before:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
