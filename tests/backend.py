"""Small per-backend helpers for tests: gradients and conversions."""

from __future__ import annotations

import numpy as np
import pytest
from keras import backend, ops

NAME = backend.backend()
# Why a test of the fused Triton and Pallas kernels skips on this backend (one
# home for the reason): the same test runs in tox's PyTorch and JAX processes.
# Tests whose subject does not depend on the backend run in tox's TensorFlow
# process only (the first), to keep CI's time for what does.
BACKEND_INDEPENDENT = pytest.mark.skipif(NAME != "tensorflow",
                                         reason="backend-independent, tested in the TensorFlow run")
NO_FUSED_KERNELS = (f"the fused kernels are Triton (PyTorch, JAX) and Pallas (JAX) code, and this run uses {NAME}; "
                    "tox's PyTorch and JAX runs (or `tox -e torch`, `tox -e jax`) run this test on them")


def implementation_cases(names: list[str], geometries: list) -> list[tuple]:
    """(implementation, geometry) pairs of a parametrised test: every
    geometry for every implementation, on every backend. (Until the kernels
    summed with Triton's own combine function, which Triton's interpreter
    runs in NumPy, the JAX run kept a third of the `triton*` geometries to
    stay within CI's time.)"""
    return [(name, geometry) for name in names for geometry in geometries]


def to_numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def tensor(x: np.ndarray, dtype: str | None = None):
    return ops.convert_to_tensor(x, dtype=dtype)


def call(fn, *inputs: np.ndarray) -> np.ndarray:
    """fn(*inputs) as a NumPy array; compiled on JAX.

    JAX's eager mode compiles every primitive on its own: a K*K-tap
    aggregation costs seconds that way, and a jitted program is what the
    layer runs as in a model anyway."""
    if NAME == "jax":
        import jax

        return to_numpy(jax.jit(fn)(*inputs))
    return to_numpy(fn(*(tensor(a) for a in inputs)))


def output_shape(layer, x: np.ndarray) -> tuple:
    """The shape layer(x) has when called, without running it on JAX.

    `jax.eval_shape` runs the call's Python code on abstract values: the
    shapes are those of a real call, without compiling each primitive."""
    if NAME == "jax":
        import jax

        layer.build(x.shape)
        return tuple(jax.eval_shape(layer, x).shape)
    return tuple(layer(x).shape)


def grads(fn, inputs: list[np.ndarray], cotangent: np.ndarray) -> list[np.ndarray]:
    """Gradients of sum(fn(*inputs) * cotangent) with respect to each input."""
    if NAME == "jax":
        import jax
        import jax.numpy as jnp

        loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * cotangent)
        grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(inputs)))))  # see call()
        return [np.asarray(g) for g in grad(*map(jnp.asarray, inputs))]
    if NAME == "torch":
        import torch
        from keras.src.backend.torch.core import get_device

        ts = [torch.tensor(a, device=get_device(), requires_grad=True) for a in inputs]
        (fn(*ts).float() * torch.tensor(cotangent, device=get_device())).sum().backward()
        return [t.grad.detach().cpu().numpy() for t in ts]
    import tensorflow as tf

    ts = [tf.constant(a) for a in inputs]
    with tf.GradientTape() as tape:
        tape.watch(ts)
        loss = tf.reduce_sum(tf.cast(fn(*ts), tf.float32) * cotangent)
    return [g.numpy() for g in tape.gradient(loss, ts)]


def layer_weight_grads(layer, x: np.ndarray, cotangent: np.ndarray, training: bool = True) -> list[np.ndarray]:
    """Gradients of sum(layer(x) * cotangent) with respect to its trainable weights."""
    if NAME == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(tv):
            y, _ = layer.stateless_call(tv, non_trainable, jnp.asarray(x), training=training)
            return jnp.sum(y.astype(jnp.float32) * cotangent)

        return [np.asarray(g) for g in jax.jit(jax.grad(loss))(trainable)]  # see call()
    if NAME == "torch":
        import torch

        y = layer(tensor(x), training=training)
        loss = (y.float() * tensor(cotangent)).sum()
        weights = [v.value for v in layer.trainable_variables]
        return [g.detach().cpu().numpy() for g in torch.autograd.grad(loss, weights)]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y = layer(tf.constant(x), training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * cotangent)
    return [g.numpy() for g in tape.gradient(loss, layer.trainable_variables)]
