"""`pallas_fused` (JAX): kernel generation and aggregation in one Pallas kernel.

The Pallas counterpart of `triton_fused` (see there): in inference one program
computes its pixels' bottleneck on chip, hidden = relu(pooled @ W_reduce' +
b_reduce') with batch normalisation folded into W_reduce' and b_reduce',
makes each tap's weight from it and aggregates, so the generated kernel
(B, Ho, Wo, G*K*K) never reaches memory. Training and `return_kernel=True` run
the `pallas` aggregation (`aggregate` below is that kernel).

JAX cannot tell at call time whether a gradient will be asked for, so the
fused call is a `jax.custom_vjp`: its forward is the fused kernel, its backward
differentiates the unfused function (bottleneck by XLA, then the `pallas`
aggregation with its backward kernels) at the same inputs.

On a CPU backend the kernel runs in Pallas' interpreter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from layers.aggregation._common import Generation, Geometry, folded_generation, generated_kernel
from layers.aggregation.pallas_kernels import _call, _iota, _load, _output_pixels, _store, _taps, aggregate

__all__ = ["aggregate", "involution"]


def _pow2_at_least_16(n: int) -> int:
    """Block sizes of a `dot` on a GPU: powers of two, at least 16."""
    return max(16, 1 << max(0, (n - 1).bit_length()))


def _fused_kernel(x_ref, xg_ref, wr_ref, br_ref, ws_ref, bs_ref, o_ref, *, geo: Geometry, reduced: int):
    K, S, cg, bp, bc = geo.kernel_size, geo.stride, geo.group_channels, geo.block_p, geo.block_c
    block_r, block_cin = _pow2_at_least_16(reduced), min(64, _pow2_at_least_16(geo.channels))
    g = pl.program_id(1) // geo.channel_blocks
    cc = (pl.program_id(1) % geo.channel_blocks) * bc + _iota(bc)  # channel within group
    c_ok = cc < cg
    c = g * cg + cc
    pix, n_pix, p_ok, b, ho, wo = _output_pixels(geo)

    # 1. The bottleneck on chip: hidden = relu(pooled @ W_reduce' + b_reduce').
    r = _iota(block_r)
    r_ok = r < reduced
    hidden = jnp.zeros((bp, block_r), jnp.float32)
    for c0 in range(0, geo.channels, block_cin):
        ci = c0 + _iota(block_cin)
        ci_ok = ci < geo.channels
        xg = _load(xg_ref, pix, ci, p_ok[:, None] & ci_ok[None, :], n_pix)  # (P, CIN)
        wr = _load(wr_ref, ci, r, ci_ok[:, None] & r_ok[None, :], geo.channels)  # (CIN, R)
        hidden += jnp.dot(xg, wr, preferred_element_type=jnp.float32)  # (P, R)
    zero_row = jnp.zeros((1,), jnp.int32)
    everywhere = jnp.full((1, 1), True)
    hidden = jnp.maximum(hidden + _load(br_ref, zero_row, r, r_ok[None, :], 1), 0.0)  # (P, R)

    # 2. Each tap's weight from the bottleneck, then the aggregation.
    def tap(i, j, acc):
        t = jnp.full((1,), g * K * K + i * K + j, jnp.int32)  # generated channel of this tap
        ws = _load(ws_ref, r, t, r_ok[:, None], reduced)[:, 0]  # (R,)
        wgt = jnp.sum(hidden * ws[None, :], axis=1) + _load(bs_ref, zero_row, t, everywhere, 1)[0, 0]  # (P,)
        hi = ho * S + i - geo.pad_top
        wi = wo * S + j - geo.pad_left
        ok = p_ok & (hi >= 0) & (hi < geo.height) & (wi >= 0) & (wi < geo.width)
        rows = (b * geo.height + hi) * geo.width + wi
        xv = _load(x_ref, rows, c, ok[:, None] & c_ok[None, :], geo.in_pixels)  # (P, C)
        return acc + wgt[:, None] * xv

    acc = _taps(geo, tap, jnp.zeros((bp, bc), jnp.float32))
    _store(o_ref, pix, c, acc, p_ok[:, None] & c_ok[None, :])


def _fused(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
    geo = Geometry.of(x.shape, kernel_size, stride, groups)
    reduced = w_reduce.shape[1]
    kernel = functools.partial(_fused_kernel, reduced=reduced)
    out = _call(
        kernel, geo, (pl.cdiv(geo.out_pixels, geo.block_p), groups * geo.channel_blocks),
        jax.ShapeDtypeStruct((geo.out_pixels, geo.channels), x.dtype),
        x.reshape(geo.in_pixels, geo.channels),  # (B*H*W, C)
        pooled.reshape(geo.out_pixels, geo.channels),  # (B*Ho*Wo, C)
        w_reduce, b_reduce.reshape(1, reduced), w_span, b_span.reshape(1, geo.generated_channels),
    )  # (B*Ho*Wo, C)
    return out.reshape(geo.batch, geo.out_height, geo.out_width, geo.channels)


def _unfused(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
    """The same function with the kernel in memory: what the backward differentiates."""
    kernel = generated_kernel(pooled, w_reduce, b_reduce, w_span, b_span, x.dtype)  # (B, Ho, Wo, G*K*K)
    return aggregate(x, kernel, kernel_size, stride, groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _involution(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
    return _fused(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups)


def _involution_fwd(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
    out = _fused(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups)
    return out, (x, pooled, w_reduce, b_reduce, w_span, b_span)


def _involution_bwd(kernel_size, stride, groups, saved, dy):
    _, vjp = jax.vjp(lambda *a: _unfused(*a, kernel_size, stride, groups), *saved)
    return vjp(dy)


_involution.defvjp(_involution_fwd, _involution_bwd)


def involution(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
    """Inference involution: x (B, H, W, C), pooled (B, Ho, Wo, C) -> (B, Ho, Wo, C); JAX arrays."""
    return _involution(x, pooled, *folded_generation(gen), kernel_size, stride, groups)
