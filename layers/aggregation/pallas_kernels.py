"""`pallas` (JAX): fused involution aggregation, forward and backward.

The same tiling as the Triton kernels: one program per BLOCK_P output pixels x
BLOCK_C channels of one group, each generated weight loaded once per pixel and
broadcast over the group's channels, the K rows a loop and each row's K taps
unrolled (`_taps`), the input read through masks (no padded copy, no patch
tensor), float32 accumulation.

The arrays are viewed as 2-D tables (pixels x channels) so every load is a
gather of rows by computed pixel indices, which Pallas lowers to Triton on
GPUs. Gradients come from a `jax.custom_vjp` with two more kernels (d_kernel:
a reduction over the group's channels; d_x: a gather over the output pixels
that read each input pixel, so no atomics), written once for Pallas and
Triton in `jax_vjp`.

On a CPU backend the kernels run in Pallas' interpreter (`interpret=True`):
correct, slow, meant for tests on machines without a GPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from layers.aggregation import jax_vjp
from layers.aggregation._common import Geometry, rows_per_step


def _iota(n):
    return jax.lax.broadcasted_iota(jnp.int32, (n,), 0)


def _load(ref, rows, cols, mask, n_rows):
    # Clamp indices so masked-off lanes still address valid memory (the
    # interpreter gathers them before masking).
    rows = jnp.clip(rows, 0, n_rows - 1)
    rows2, cols2 = jnp.broadcast_arrays(rows[:, None], cols[None, :])
    return plgpu.load(ref.at[rows2, cols2], mask=mask, other=0.0).astype(jnp.float32)


def _store(ref, rows, cols, value, mask):
    # No clamping here: a clamped masked-off lane would alias a real pixel
    # and the interpreter's scatter may let it win.
    rows2, cols2 = jnp.broadcast_arrays(rows[:, None], cols[None, :])
    plgpu.store(ref.at[rows2, cols2], value.astype(ref.dtype), mask=mask)


def _output_pixels(geo: Geometry):
    """This program's BLOCK_P flat output pixels, their mask and (b, ho, wo)."""
    pix = pl.program_id(0) * geo.block_p + _iota(geo.block_p)
    n_pix = geo.out_pixels
    p_ok = pix < n_pix
    wo = pix % geo.out_width
    ho = (pix // geo.out_width) % geo.out_height
    return pix, n_pix, p_ok, pix // (geo.out_width * geo.out_height), ho, wo


def _channel_block(geo: Geometry):
    """This program's group g, its BLOCK_C channels c and their mask (grid
    axis 1 runs over groups x channel blocks)."""
    g = pl.program_id(1) // geo.channel_blocks
    cc = (pl.program_id(1) % geo.channel_blocks) * geo.block_c + _iota(geo.block_c)  # channel within group
    return g, g * geo.group_channels + cc, cc < geo.group_channels


def _input_pixels(geo: Geometry):
    """This program's BLOCK_P flat input pixels, their mask and (b, h, w)."""
    pix = pl.program_id(0) * geo.block_p + _iota(geo.block_p)
    w = pix % geo.width
    h = (pix // geo.width) % geo.height
    return pix, pix < geo.in_pixels, pix // (geo.width * geo.height), h, w


def _reader(geo: Geometry, pixels: tuple, i, j: int):
    """(q, ok): the output pixel whose window reads each input pixel at tap
    (i, j), and whether there is one (`pixels`: what `_input_pixels` returns)."""
    S = geo.stride
    _, p_ok, b, h, w = pixels
    hn = h + geo.pad_top - i  # = ho * S when output row ho reads this pixel at tap row i
    wn = w + geo.pad_left - j
    ho, wo = hn // S, wn // S
    ok = (p_ok & (hn >= 0) & (hn % S == 0) & (ho < geo.out_height)
          & (wn >= 0) & (wn % S == 0) & (wo < geo.out_width))
    return (b * geo.out_height + ho) * geo.out_width + wo, ok


def _taps(geo: Geometry, body, carry):
    """Run body(i, j, carry) over the K*K window offsets as the Triton
    kernels do: the K rows in a `fori_loop` (i is traced), each row's K taps
    unrolled in Python (j is an int). Pallas' Triton lowering accepts a plain
    `fori_loop` (not an unrolled one), and the interpreter runs the same loop,
    so the code the tests check is the code a GPU compiles. Rolling the rows
    keeps a row's loads, not the window's, in flight (registers) and traces
    K taps instead of K*K (compile time); see docs/PERF.md section 13. With
    INVOLUTION_UNROLL_WINDOW=1 (`rows_per_step`) every tap is unrolled in
    Python, as up to version v4."""
    k = geo.kernel_size
    rows = rows_per_step(k)

    def step(s, carry):
        for di in range(rows):
            i = s * rows + di
            for j in range(k):
                carry = body(i, j, carry)
        return carry

    if rows == k:
        return step(0, carry)  # no loop at all: i is an int
    return jax.lax.fori_loop(0, k // rows, step, carry)


def _fwd_kernel(x_ref, k_ref, o_ref, *, geo: Geometry):
    K, S, bp, bc = geo.kernel_size, geo.stride, geo.block_p, geo.block_c
    g, c, c_ok = _channel_block(geo)
    pix, n_pix, p_ok, b, ho, wo = _output_pixels(geo)

    def tap(i, j, acc):
        hi = ho * S + i - geo.pad_top
        wi = wo * S + j - geo.pad_left
        ok = p_ok & (hi >= 0) & (hi < geo.height) & (wi >= 0) & (wi < geo.width)
        col = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
        wgt = _load(k_ref, pix, col, p_ok[:, None], n_pix)[:, 0]  # (P,)
        rows = (b * geo.height + hi) * geo.width + wi
        xv = _load(x_ref, rows, c, ok[:, None] & c_ok[None, :], geo.in_pixels)  # (P, C)
        return acc + wgt[:, None] * xv

    acc = _taps(geo, tap, jnp.zeros((bp, bc), jnp.float32))
    _store(o_ref, pix, c, acc, p_ok[:, None] & c_ok[None, :])


def _tap_kernel_grad(x_ref, dy_ref, geo: Geometry, pixels: tuple, g, i, j: int):
    """d_kernel of tap (i, j) of group g at this program's output pixels
    (`pixels`: what `_output_pixels` returns, read outside any loop): sum over
    the group's channels of dy[p, c] * x[window_ij(p), c]; (P,)."""
    S, cg, bp, bc = geo.stride, geo.group_channels, geo.block_p, geo.block_c
    pix, n_pix, p_ok, b, ho, wo = pixels
    hi = ho * S + i - geo.pad_top
    wi = wo * S + j - geo.pad_left
    ok = p_ok & (hi >= 0) & (hi < geo.height) & (wi >= 0) & (wi < geo.width)
    rows = (b * geo.height + hi) * geo.width + wi
    s = jnp.zeros((bp,), jnp.float32)
    for c0 in range(0, cg, bc):  # the group's channels, BLOCK_C at a time
        cc = c0 + _iota(bc)
        c_ok = cc < cg
        c = g * cg + cc
        dyv = _load(dy_ref, pix, c, p_ok[:, None] & c_ok[None, :], n_pix)  # (P, C)
        xv = _load(x_ref, rows, c, ok[:, None] & c_ok[None, :], geo.in_pixels)  # (P, C)
        s += jnp.sum(dyv * xv, axis=1)
    return s


def _dk_kernel(x_ref, dy_ref, dk_ref, *, geo: Geometry):
    K = geo.kernel_size
    g = pl.program_id(1)
    pixels = _output_pixels(geo)
    pix, _, p_ok, _, _, _ = pixels

    def tap(i, j, carry):
        s = _tap_kernel_grad(x_ref, dy_ref, geo, pixels, g, i, j)
        col = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
        _store(dk_ref, pix, col, s[:, None], p_ok[:, None])
        return carry

    _taps(geo, tap, jnp.int32(0))


def _dx_kernel(k_ref, dy_ref, dx_ref, *, geo: Geometry):
    K, bp, bc = geo.kernel_size, geo.block_p, geo.block_c
    g, c, c_ok = _channel_block(geo)
    pixels = _input_pixels(geo)
    pix, p_ok = pixels[:2]
    n_out = geo.out_pixels

    def tap(i, j, acc):
        q, ok = _reader(geo, pixels, i, j)
        col = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
        wgt = _load(k_ref, q, col, ok[:, None], n_out)[:, 0]  # (P,)
        dyv = _load(dy_ref, q, c, ok[:, None] & c_ok[None, :], n_out)  # (P, C)
        return acc + wgt[:, None] * dyv

    acc = _taps(geo, tap, jnp.zeros((bp, bc), jnp.float32))
    _store(dx_ref, pix, c, acc, p_ok[:, None] & c_ok[None, :])


def _interpret() -> bool:
    return jax.default_backend() == "cpu"


def _call(kernel_fn, geo: Geometry, grid, out_shape, *args):
    return pl.pallas_call(
        functools.partial(kernel_fn, geo=geo),
        out_shape=out_shape,
        grid=grid,
        interpret=_interpret(),
        compiler_params=None if _interpret() else plgpu.CompilerParams(num_warps=4, num_stages=2),
    )(*args)


def _forward(geo: Geometry, x2, k2):
    return _call(_fwd_kernel, geo, (pl.cdiv(geo.out_pixels, geo.block_p), geo.groups * geo.channel_blocks),
                 jax.ShapeDtypeStruct((geo.out_pixels, geo.channels), x2.dtype), x2, k2)  # (B*Ho*Wo, C)


def _kernel_grad(geo: Geometry, x2, dy2, dtype):
    return _call(_dk_kernel, geo, (pl.cdiv(geo.out_pixels, geo.block_p), geo.groups),
                 jax.ShapeDtypeStruct((geo.out_pixels, geo.generated_channels), dtype), x2, dy2)


def _input_grad(geo: Geometry, k2, dy2, dtype):
    return _call(_dx_kernel, geo, (pl.cdiv(geo.in_pixels, geo.block_p), geo.groups * geo.channel_blocks),
                 jax.ShapeDtypeStruct((geo.in_pixels, geo.channels), dtype), k2, dy2)


aggregate = jax_vjp.aggregation(jax_vjp.AggregationCalls(_forward, _kernel_grad, _input_grad))
