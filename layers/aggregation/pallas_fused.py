"""`pallas_fused` (JAX): kernel generation and aggregation in one Pallas kernel.

The Pallas counterpart of `triton_fused` (see there): in inference one program
computes its pixels' bottleneck on chip, hidden = relu(pooled @ W_reduce' +
b_reduce') with batch normalisation folded into W_reduce' and b_reduce',
makes each tap's weight from it and aggregates, so the generated kernel
(B, Ho, Wo, G*K*K) never reaches memory. Training and `return_kernel=True` run
the `pallas` aggregation (`aggregate` below is that kernel).

The custom VJPs (an inference call's backward differentiates the folded
bottleneck by XLA, then the generating aggregation) are `jax_vjp`'s, shared
with `triton_fused` on JAX.

On a CPU backend the kernel runs in Pallas' interpreter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from layers.aggregation import jax_vjp
from layers.aggregation._common import Geometry, bottleneck_block, input_channel_block
from layers.aggregation.pallas_kernels import (
    _call,
    _channel_block,
    _input_pixels,
    _iota,
    _load,
    _output_pixels,
    _reader,
    _store,
    _tap_kernel_grad,
    _taps,
    aggregate,
)

__all__ = ["aggregate", "aggregate_hidden", "involution"]


def _fused_kernel(x_ref, xg_ref, wr_ref, br_ref, ws_ref, bs_ref, o_ref, *, geo: Geometry, reduced: int,
                  from_hidden: bool):
    K, S, bp, bc = geo.kernel_size, geo.stride, geo.block_p, geo.block_c
    block_r, block_cin = bottleneck_block(reduced), input_channel_block(geo.channels)
    g, c, c_ok = _channel_block(geo)
    pix, n_pix, p_ok, b, ho, wo = _output_pixels(geo)

    r = _iota(block_r)
    r_ok = r < reduced
    zero_row = jnp.zeros((1,), jnp.int32)
    everywhere = jnp.full((1, 1), True)
    if from_hidden:
        # 1'. Training: the layer computed the bottleneck (batch statistics);
        # xg_ref is that hidden tensor (n_pix, R).
        hidden = _load(xg_ref, pix, r, p_ok[:, None] & r_ok[None, :], n_pix)  # (P, R)
    else:
        # 1. The bottleneck on chip: hidden = relu(pooled @ W_reduce' + b_reduce').
        hidden = jnp.zeros((bp, block_r), jnp.float32)
        for c0 in range(0, geo.channels, block_cin):
            ci = c0 + _iota(block_cin)
            ci_ok = ci < geo.channels
            xg = _load(xg_ref, pix, ci, p_ok[:, None] & ci_ok[None, :], n_pix)  # (P, CIN)
            wr = _load(wr_ref, ci, r, ci_ok[:, None] & r_ok[None, :], geo.channels)  # (CIN, R)
            hidden += jnp.dot(xg, wr, preferred_element_type=jnp.float32)  # (P, R)
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


def _dgen_kernel(x_ref, dy_ref, h_ref, ws_ref, dh_ref, dws_ref, dbs_ref, *, geo: Geometry, reduced: int):
    """Backward through the generated weights (as `triton_fused`'s): one
    program per pixel tile, over every group (a `fori_loop`); per tap,
    d_w[p] = sum over the group's channels of dy * x[window], then d_hidden
    (kept on chip) and this tile's shares of the span weights' gradients,
    summed by the caller. The span-weight table has block_r rows a tile, so
    that no masked lane aliases a real one."""
    K, bp = geo.kernel_size, geo.block_p
    block_r = bottleneck_block(reduced)
    tile = pl.program_id(0)
    pixels = _output_pixels(geo)
    pix, n_pix, p_ok, _, _, _ = pixels
    r = _iota(block_r)
    r_ok = r < reduced
    hidden = _load(h_ref, pix, r, p_ok[:, None] & r_ok[None, :], n_pix)  # (P, R)
    tile_row = jnp.full((1,), tile, jnp.int32)
    everywhere = jnp.full((1, 1), True)

    def group(g, d_hidden):
        def tap(i, j, d_hidden):
            d_w = _tap_kernel_grad(x_ref, dy_ref, geo, pixels, g, i, j)  # (P,)
            t = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
            ws = _load(ws_ref, r, t, r_ok[:, None], reduced)[:, 0]  # (R,)
            _store(dws_ref, tile * block_r + r, t, jnp.sum(hidden * d_w[:, None], axis=0)[:, None], r_ok[:, None])
            _store(dbs_ref, tile_row, t, jnp.sum(d_w).reshape(1, 1), everywhere)
            return d_hidden + d_w[:, None] * ws[None, :]  # (P, R)

        return _taps(geo, tap, d_hidden)

    d_hidden = jax.lax.fori_loop(0, geo.groups, group, jnp.zeros((bp, block_r), jnp.float32))
    _store(dh_ref, pix, r, d_hidden, p_ok[:, None] & r_ok[None, :])


def _dx_gen_kernel(h_ref, ws_ref, bs_ref, dy_ref, dx_ref, *, geo: Geometry, reduced: int):
    """d_x as `pallas`' d-x kernel, each weight generated again from the
    hidden tensor of the output pixel that reads this input pixel."""
    K, bp, bc = geo.kernel_size, geo.block_p, geo.block_c
    block_r = bottleneck_block(reduced)
    g, c, c_ok = _channel_block(geo)
    pixels = _input_pixels(geo)
    pix, p_ok = pixels[:2]
    n_out = geo.out_pixels
    r = _iota(block_r)
    r_ok = r < reduced
    zero_row = jnp.zeros((1,), jnp.int32)
    everywhere = jnp.full((1, 1), True)

    def tap(i, j, acc):
        q, ok = _reader(geo, pixels, i, j)
        t = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
        hq = _load(h_ref, q, r, ok[:, None] & r_ok[None, :], n_out)  # (P, R)
        ws = _load(ws_ref, r, t, r_ok[:, None], reduced)[:, 0]  # (R,)
        wgt = jnp.sum(hq * ws[None, :], axis=1) + _load(bs_ref, zero_row, t, everywhere, 1)[0, 0]  # (P,)
        dyv = _load(dy_ref, q, c, ok[:, None] & c_ok[None, :], n_out)  # (P, C)
        return acc + wgt[:, None] * dyv

    acc = _taps(geo, tap, jnp.zeros((bp, bc), jnp.float32))
    _store(dx_ref, pix, c, acc, p_ok[:, None] & c_ok[None, :])


def _fused(geo: Geometry, reduced: int, from_hidden: bool, x2, xg2, w_reduce, b_reduce, w_span, b_span):
    """The fused forward; xg2 is the pooled input, or the hidden tensor when
    `from_hidden` (w_reduce and b_reduce are then unused)."""
    kernel = functools.partial(_fused_kernel, reduced=reduced, from_hidden=from_hidden)
    return _call(
        kernel, geo, (pl.cdiv(geo.out_pixels, geo.block_p), geo.groups * geo.channel_blocks),
        jax.ShapeDtypeStruct((geo.out_pixels, geo.channels), x2.dtype),
        x2, xg2, w_reduce, b_reduce.reshape(1, -1), w_span, b_span.reshape(1, geo.generated_channels),
    )  # (B*Ho*Wo, C)


def _generation_grad(geo: Geometry, reduced: int, x2, dy2, h2, w_span):
    block_r = bottleneck_block(reduced)
    tiles = pl.cdiv(geo.out_pixels, geo.block_p)
    gkk = geo.generated_channels
    d_hidden, d_w, d_b = _call(
        functools.partial(_dgen_kernel, reduced=reduced), geo, (tiles,),
        (jax.ShapeDtypeStruct(h2.shape, h2.dtype),
         jax.ShapeDtypeStruct((tiles * block_r, gkk), jnp.float32),  # per pixel tile
         jax.ShapeDtypeStruct((tiles, gkk), jnp.float32)),
        x2, dy2, h2, w_span)
    return d_hidden, d_w.reshape(tiles, block_r, gkk)[:, :reduced].sum(0), d_b.sum(0)


def _input_grad_generated(geo: Geometry, reduced: int, h2, w_span, b_span, dy2, dtype):
    return _call(functools.partial(_dx_gen_kernel, reduced=reduced), geo,
                 (pl.cdiv(geo.in_pixels, geo.block_p), geo.groups * geo.channel_blocks),
                 jax.ShapeDtypeStruct((geo.in_pixels, geo.channels), dtype), h2, w_span,
                 b_span.reshape(1, -1), dy2)


aggregate_hidden, involution = jax_vjp.generation(
    jax_vjp.GenerationCalls(_fused, _generation_grad, _input_grad_generated))
