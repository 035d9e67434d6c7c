"""What the A/B scripts of this folder share (one home for how the sweep
runs a step without jit)."""

import functools

import numpy as np
from keras import backend, ops


def without_jit(fn, gradients: bool):
    """fn(x, k), or the gradients of sum(fn(x, k)^2) with respect to both, as
    this backend's sweep runs a step without jit (TensorFlow: a graph; JAX:
    jitted, as it is always timed; PyTorch: eager)."""
    name = backend.backend()
    if name == "jax":
        import jax
        import jax.numpy as jnp

        return jax.jit(jax.grad(lambda x, k: jnp.sum(fn(x, k) ** 2), argnums=(0, 1)) if gradients else fn)
    if name == "torch":
        if not gradients:
            return fn

        def step(x, k):
            x, k = x.detach().requires_grad_(), k.detach().requires_grad_()
            (fn(x, k) ** 2).sum().backward()
            return x.grad, k.grad

        return step
    import tensorflow as tf

    def step(x, k):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            loss = tf.reduce_sum(fn(x, k) ** 2)
        return tape.gradient(loss, [x, k])

    return tf.function(step if gradients else fn)


def check_and_time(steps: dict, args: tuple, timer, seconds: float, tolerance: float) -> dict[str, float]:
    """Each of `steps` called on `args` (compiling it), its outputs checked
    against the last step's to within `tolerance` of their largest value
    (the forms compute the same, summing in other orders), then the median
    milliseconds of each, the steps alternating round by round for `seconds`
    (`bench.timing.Timer.alternating`)."""
    outputs = {name: [ops.convert_to_numpy(t) for t in (r if isinstance(r, (list, tuple)) else [r])]
               for name, r in ((name, step(*args)) for name, step in steps.items())}
    *others, last = outputs.values()
    scale = max(float(np.abs(z).max()) for z in last)
    for other in others:
        for a, z in zip(other, last, strict=True):
            np.testing.assert_allclose(a, z, rtol=tolerance, atol=tolerance * scale)
    times = timer.alternating({name: functools.partial(step, *args) for name, step in steps.items()}, seconds)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}
