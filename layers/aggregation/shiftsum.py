"""`shiftsum`: accumulate K*K shifted windows times their weight.

Never builds the (B, Ho, Wo, K*K, C) patch tensor: the largest intermediates
are one (B, Ho, Wo, C) window, the accumulator and the kernel split into its
K*K taps (the kernel's size again, where the backend copies a split). Costs
K*K passes over the input instead of one, which compilers (XLA) may or may not
fuse.

On TensorFlow and JAX the gradient is written out in the same form instead
of being left to automatic differentiation, which scatters each window's
gradient into a zero tensor the size of the padded input (K*K of them,
summed) and keeps every window for the backward pass (docs/PERF.md,
section 26):

- kernel gradient: for each tap, the output gradient times the tap's window,
  summed over the group's channels;
- input gradient, gathered instead of scattered: a pixel of the padded input
  in stride phase (y mod s, z mod s) receives only from the taps (i, j) with
  i = y, j = z (mod s), each a plain window of the zero-padded output
  gradient times the same window of the zero-padded kernel; the s * s phases
  are interleaved once at the end.

That backward pass keeps only the padded input and the kernel. On JAX it is a
`jax.custom_vjp`: reverse mode only (gradients of gradients work; `jax.jvp`
through `shiftsum` raises, `reference` supports it).
"""

from __future__ import annotations

from keras import backend, ops

from layers.aggregation._common import _pad, padded_input, padded_windows


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C)."""
    # The padding is left to automatic differentiation (its gradient is a crop).
    xp, ho, wo = padded_input(x, kernel_size, stride)  # (B, (Ho-1)*s+K, (Wo-1)*s+K, C)
    return _DIFFERENTIABLE[backend.backend()](xp, kernel, ho, wo, kernel_size, stride, groups)


def _forward(xp, kernel, ho, wo, kernel_size: int, stride: int, groups: int):
    """xp (B, Hp, Wp, C) from `padded_input`, kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C)."""
    k, channels = kernel_size, xp.shape[-1]
    window = padded_windows(xp, ho, wo, k, stride, groups)  # window(i, j): (B, Ho, Wo, G, C/G)
    taps = _taps(kernel, ho, wo, k, groups)  # K*K x (B, Ho, Wo, G, 1)
    out = None
    for i in range(k):
        for j in range(k):
            term = window(i, j) * taps[i * k + j]  # (B, Ho, Wo, G, C/G)
            out = term if out is None else out + term
    return ops.reshape(out, (-1, ho, wo, channels))


def _taps(kernel, ho, wo, kernel_size: int, groups: int):
    """The kernel's K*K taps, (B, Ho, Wo, G, 1) each, split in one op: its
    gradient would stack the taps' gradients, where K*K indexings kernel[..., t]
    would each scatter theirs into a zero tensor of the kernel's full size."""
    return ops.unstack(ops.reshape(kernel, (-1, ho, wo, groups, 1, kernel_size * kernel_size)), axis=-1)


def _backward(xp, kernel, dy, ho, wo, kernel_size: int, stride: int, groups: int):
    """The gradients (d xp, d kernel) of `_forward` for its output's gradient dy (B, Ho, Wo, C)."""
    k, s, channels = kernel_size, stride, xp.shape[-1]
    width = channels // groups
    dy_g = ops.reshape(dy, (-1, ho, wo, groups, width))  # (B, Ho, Wo, G, C/G)

    window = padded_windows(xp, ho, wo, k, s, groups)  # window(i, j): (B, Ho, Wo, G, C/G)
    d_kernel = ops.stack(
        [ops.sum(window(i, j) * dy_g, axis=-1) for i in range(k) for j in range(k)],
        axis=-1,
    )  # (B, Ho, Wo, G, K*K)
    d_kernel = ops.reshape(d_kernel, (-1, ho, wo, groups * k * k))

    # Phase (p, q) of d xp has Hb = Ho + U rows, U = (K - 1) // s; its row u
    # takes tap i = p + s * m from output row u - m (m = 0 .. U): with the output
    # gradient and the kernel zero-padded by U on every side, that is the
    # window starting at row U - m.
    u = (k - 1) // s
    hb, wb = ho + u, wo + u
    dy_p = ops.reshape(_pad(dy, u, u, u, u), (-1, ho + 2 * u, wo + 2 * u, groups, width))  # (B, Ho+2U, Wo+2U, G, C/G)
    taps_p = _taps(_pad(kernel, u, u, u, u), ho + 2 * u, wo + 2 * u, k, groups)  # K*K x (B, Ho+2U, Wo+2U, G, 1)
    phases = []
    for p in range(s):
        for q in range(s):
            acc = None
            for i in range(p, k, s):
                for j in range(q, k, s):
                    top, left = u - (i - p) // s, u - (j - q) // s
                    term = (dy_p[:, top : top + hb, left : left + wb]
                            * taps_p[i * k + j][:, top : top + hb, left : left + wb])  # (B, Hb, Wb, G, C/G)
                    acc = term if acc is None else acc + term
            if acc is None:  # s > K: no tap reads this phase
                acc = ops.zeros_like(dy_p[:, :hb, :wb])
            phases.append(ops.reshape(acc, (-1, hb, wb, channels)))  # (B, Hb, Wb, C)
    if s == 1:
        return phases[0], d_kernel  # Hb = Hp
    d_xp = ops.reshape(ops.stack(phases, axis=0), (s, s, -1, hb, wb, channels))  # (s, s, B, Hb, Wb, C)
    d_xp = ops.reshape(ops.transpose(d_xp, (2, 3, 0, 4, 1, 5)), (-1, hb * s, wb * s, channels))  # (B, Hb*s, Wb*s, C)
    return d_xp[:, : (ho - 1) * s + k, : (wo - 1) * s + k, :], d_kernel  # (B, Hp, Wp, C)


# `_forward` made differentiable, per backend: on TensorFlow and JAX with
# `_backward` as its gradient (the geometry ho, wo, K, s, G not
# differentiated).
def _tensorflow(xp, kernel, ho, wo, kernel_size, stride, groups):
    import tensorflow as tf

    @tf.custom_gradient
    def differentiable(xp, kernel):
        def grad(dy):
            return _backward(xp, kernel, dy, ho, wo, kernel_size, stride, groups)

        return _forward(xp, kernel, ho, wo, kernel_size, stride, groups), grad

    return differentiable(xp, kernel)


_DIFFERENTIABLE = {"tensorflow": _tensorflow}

if backend.backend() == "jax":
    import functools

    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
    def _jax(xp, kernel, ho, wo, kernel_size, stride, groups):
        return _forward(xp, kernel, ho, wo, kernel_size, stride, groups)

    def _jax_forward(xp, kernel, ho, wo, kernel_size, stride, groups):
        return _forward(xp, kernel, ho, wo, kernel_size, stride, groups), (xp, kernel)

    def _jax_backward(ho, wo, kernel_size, stride, groups, saved, dy):
        return _backward(*saved, dy, ho, wo, kernel_size, stride, groups)

    _jax.defvjp(_jax_forward, _jax_backward)
    _DIFFERENTIABLE["jax"] = _jax

# PyTorch differentiates `_forward` itself: its windows are views, and each
# one's gradient is a copy into zeros. With `_backward` the aggregation took
# 0.78-1.05x the time in one process, but the layer's training steps showed
# no change beyond the processes' noise, in 1.4-2x the peak memory
# (docs/PERF.md, section 26).
_DIFFERENTIABLE["torch"] = _forward
