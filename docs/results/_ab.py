"""What the A/B scripts of this folder share (one home for how the sweep
runs a step without jit)."""

from keras import backend


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
