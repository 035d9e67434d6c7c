"""The JAX side of a fused implementation, written once for every kernel
language: reshapes, `jax.custom_vjp` rules, and which kernel each gradient
runs. `pallas` / `pallas_fused` (Pallas kernels) and `triton` /
`triton_fused` on JAX (Triton kernels through jax-triton) differ only in the
kernel calls they hand to `aggregation` and `generation`.

A kernel call takes the geometry and 2-D views of the tensors: pixels x
channels, (B*H*W, C) for the input and (B*Ho*Wo, ...) for everything at the
output's pixels; it returns its outputs the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from layers.aggregation._common import Generation, Geometry, folded_generation


class AggregationCalls(NamedTuple):
    """The kernels of an aggregation of a generated kernel."""

    forward: Callable  # (geo, x2, k2) -> out2, in x2's dtype
    kernel_grad: Callable  # (geo, x2, dy2, dtype) -> d_kernel2 (B*Ho*Wo, G*K*K)
    input_grad: Callable  # (geo, k2, dy2, dtype) -> d_x2 (B*H*W, C)


class GenerationCalls(NamedTuple):
    """The kernels of an implementation generating its weights on chip."""

    # (geo, reduced, from_hidden, x2, xg2, w_reduce, b_reduce, w_span, b_span) -> out2; xg2 is the pooled input
    # (B*Ho*Wo, C), or with from_hidden the bottleneck (B*Ho*Wo, R), w_reduce and b_reduce then unused.
    fused: Callable
    # (geo, reduced, x2, dy2, h2, w_span) -> (d_hidden2, d_w_span (R, G*K*K), d_b_span (G*K*K,)), float32 sums
    generation_grad: Callable
    # (geo, reduced, h2, w_span, b_span, dy2, dtype) -> d_x2
    input_grad_generated: Callable


def _flat(geo: Geometry, x, at_output):
    """x (B, H, W, C) -> (B*H*W, C); at_output (B, Ho, Wo, N) -> (B*Ho*Wo, N)."""
    return x.reshape(geo.in_pixels, geo.channels), at_output.reshape(geo.out_pixels, at_output.shape[-1])


def _image(geo: Geometry, out2):
    return out2.reshape(geo.batch, geo.out_height, geo.out_width, geo.channels)  # (B, Ho, Wo, C)


def aggregation(calls: AggregationCalls) -> Callable:
    """`aggregate(x, kernel, kernel_size, stride, groups)` running `calls`,
    differentiable in x and kernel."""

    def forward(x, kernel, kernel_size, stride, groups):
        geo = Geometry.of(x.shape, kernel_size, stride, groups)
        return _image(geo, calls.forward(geo, *_flat(geo, x, kernel)))

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
    def aggregate_(x, kernel, kernel_size, stride, groups):
        return forward(x, kernel, kernel_size, stride, groups)

    def fwd(x, kernel, kernel_size, stride, groups):
        return forward(x, kernel, kernel_size, stride, groups), (x, kernel)

    def bwd(kernel_size, stride, groups, saved, dy):
        x, kernel = saved
        geo = Geometry.of(x.shape, kernel_size, stride, groups)
        x2, k2 = _flat(geo, x, kernel)
        dy2 = dy.reshape(geo.out_pixels, geo.channels)  # (B*Ho*Wo, C)
        dk = calls.kernel_grad(geo, x2, dy2, kernel.dtype)
        dx = calls.input_grad(geo, k2, dy2, x.dtype)
        return dx.reshape(x.shape), dk.reshape(kernel.shape)

    aggregate_.defvjp(fwd, bwd)

    def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
        """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C); JAX arrays."""
        return aggregate_(x, kernel, kernel_size, stride, groups)

    return aggregate


def generation(calls: GenerationCalls) -> tuple[Callable, Callable]:
    """(`aggregate_hidden`, `involution`) running `calls`.

    JAX cannot tell at call time whether a gradient will be asked for, so
    the inference call is a `jax.custom_vjp` too: its forward is the fused
    kernel, its backward differentiates the same function written as the
    folded bottleneck by XLA, then `aggregate_hidden`.
    """
    f32 = jnp.float32

    def fused(x, xg, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups, from_hidden=False):
        geo = Geometry.of(x.shape, kernel_size, stride, groups)
        reduced = xg.shape[-1] if from_hidden else w_reduce.shape[1]
        return _image(geo, calls.fused(geo, reduced, from_hidden, *_flat(geo, x, xg), w_reduce, b_reduce,
                                       w_span, b_span))

    @functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
    def hidden_aggregation(x, hidden, w_span, b_span, kernel_size, stride, groups):
        w_span32, b_span32 = w_span.astype(f32), b_span.astype(f32)
        return fused(x, hidden, w_span32, b_span32, w_span32, b_span32, kernel_size, stride, groups,
                     from_hidden=True)

    def hidden_fwd(x, hidden, w_span, b_span, kernel_size, stride, groups):
        out = hidden_aggregation(x, hidden, w_span, b_span, kernel_size, stride, groups)
        return out, (x, hidden, w_span, b_span)

    def hidden_bwd(kernel_size, stride, groups, saved, dy):
        x, hidden, w_span, b_span = saved
        geo = Geometry.of(x.shape, kernel_size, stride, groups)
        reduced = hidden.shape[-1]
        x2, h2 = _flat(geo, x, hidden)  # (B*H*W, C), (B*Ho*Wo, R)
        dy2 = dy.reshape(geo.out_pixels, geo.channels)  # (B*Ho*Wo, C)
        w_span32, b_span32 = w_span.astype(f32), b_span.astype(f32)
        d_hidden, d_w, d_b = calls.generation_grad(geo, reduced, x2, dy2, h2, w_span32)
        dx = calls.input_grad_generated(geo, reduced, h2, w_span32, b_span32, dy2, x.dtype)
        return (dx.reshape(x.shape), d_hidden.reshape(hidden.shape).astype(hidden.dtype), d_w.astype(w_span.dtype),
                d_b.astype(b_span.dtype))

    hidden_aggregation.defvjp(hidden_fwd, hidden_bwd)

    def aggregate_hidden(x, hidden, span_kernel, span_bias, kernel_size: int, stride: int, groups: int):
        """Training involution from the bottleneck: x (B, H, W, C), hidden
        (B, Ho, Wo, R), span kernel (R, G*K*K) and bias (G*K*K,) -> (B, Ho, Wo, C),
        the kernel generated on chip forward and backward; JAX arrays."""
        return hidden_aggregation(x, hidden, span_kernel, span_bias, kernel_size, stride, groups)

    def with_gradients(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
        """The fused inference kernel's function, differentiable: the folded
        bottleneck by XLA, then the generating aggregation."""
        hidden = jax.nn.relu(pooled.astype(f32) @ w_reduce + b_reduce).astype(x.dtype)  # (B, Ho, Wo, R)
        return aggregate_hidden(x, hidden, w_span, b_span, kernel_size, stride, groups)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
    def involution_(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
        return fused(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups)

    def involution_fwd(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
        out = fused(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups)
        return out, (x, pooled, w_reduce, b_reduce, w_span, b_span)

    def involution_bwd(kernel_size, stride, groups, saved, dy):
        _, vjp = jax.vjp(lambda *a: with_gradients(*a, kernel_size, stride, groups), *saved)
        return vjp(dy)

    involution_.defvjp(involution_fwd, involution_bwd)

    def involution(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
        """Inference involution: x (B, H, W, C), pooled (B, Ho, Wo, C) -> (B, Ho, Wo, C); JAX arrays."""
        return involution_(x, pooled, *folded_generation(gen), kernel_size, stride, groups)

    return aggregate_hidden, involution
