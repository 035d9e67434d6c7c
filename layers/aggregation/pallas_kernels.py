"""`pallas` (JAX): fused involution aggregation, forward and backward.

The same tiling as the Triton kernels: one program per BLOCK_P output pixels x
BLOCK_C channels of one group, each generated weight loaded once per pixel and
broadcast over the group's channels, the K*K loop unrolled, the input read
through masks (no padded copy, no patch tensor), float32 accumulation.

The arrays are viewed as 2-D tables (pixels x channels) so every load is a
gather of rows by computed pixel indices, which Pallas lowers to Triton on
GPUs. Gradients come from a `jax.custom_vjp` with two more kernels (d_kernel:
a reduction over the group's channels; d_x: a gather over the output pixels
that read each input pixel, so no atomics).

On a CPU backend the kernels run in Pallas' interpreter (`interpret=True`):
correct, slow, meant for tests on machines without a GPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from layers.aggregation._common import same_padding


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _tiles(group_channels: int) -> tuple[int, int]:
    block_c = min(_next_pow2(group_channels), 64)
    block_p = max(16, min(128, 4096 // block_c))
    return block_p, block_c


@functools.cache
def _plan(b, h, w, c, kernel_size, stride, groups):
    top, _, ho = same_padding(h, kernel_size, stride)
    left, _, wo = same_padding(w, kernel_size, stride)
    cg = c // groups
    block_p, block_c = _tiles(cg)
    return dict(b=b, h=h, w=w, c=c, ho=ho, wo=wo, top=top, left=left, cg=cg,
                k=kernel_size, s=stride, g=groups, bp=block_p, bc=block_c,
                n_cblk=-(-cg // block_c))


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


def _output_pixels(p):
    """This program's BLOCK_P flat output pixels, their mask and (b, ho, wo)."""
    pix = pl.program_id(0) * p["bp"] + _iota(p["bp"])
    n_pix = p["b"] * p["ho"] * p["wo"]
    p_ok = pix < n_pix
    return pix, n_pix, p_ok, pix // (p["wo"] * p["ho"]), (pix // p["wo"]) % p["ho"], pix % p["wo"]


def _taps(p, body, carry):
    """Run body(i, j, carry) over the K*K window offsets.

    Compiled for a GPU the taps are unrolled in Python (Pallas' Triton
    lowering rejects an unrolled `fori_loop`), as Triton's `static_range`
    does; in the interpreter they stay a rolled `fori_loop`, since an
    unrolled K=7 body takes seconds to interpret-compile.
    """
    k = p["k"]
    if _interpret():
        return jax.lax.fori_loop(0, k * k, lambda t, c: body(t // k, t % k, c), carry)
    for i in range(k):
        for j in range(k):
            carry = body(i, j, carry)
    return carry


def _fwd_kernel(x_ref, k_ref, o_ref, *, p):
    K, S, cg, bp, bc = p["k"], p["s"], p["cg"], p["bp"], p["bc"]
    g = pl.program_id(1) // p["n_cblk"]
    cc = (pl.program_id(1) % p["n_cblk"]) * bc + _iota(bc)  # channel within group
    c_ok = cc < cg
    c = g * cg + cc
    pix, n_pix, p_ok, b, ho, wo = _output_pixels(p)

    def tap(i, j, acc):
        hi = ho * S + i - p["top"]
        wi = wo * S + j - p["left"]
        ok = p_ok & (hi >= 0) & (hi < p["h"]) & (wi >= 0) & (wi < p["w"])
        col = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
        wgt = _load(k_ref, pix, col, p_ok[:, None], n_pix)[:, 0]  # (P,)
        rows = (b * p["h"] + hi) * p["w"] + wi
        xv = _load(x_ref, rows, c, ok[:, None] & c_ok[None, :], p["b"] * p["h"] * p["w"])  # (P, C)
        return acc + wgt[:, None] * xv

    acc = _taps(p, tap, jnp.zeros((bp, bc), jnp.float32))
    _store(o_ref, pix, c, acc, p_ok[:, None] & c_ok[None, :])


def _dk_kernel(x_ref, dy_ref, dk_ref, *, p):
    K, S, cg, bp, bc = p["k"], p["s"], p["cg"], p["bp"], p["bc"]
    g = pl.program_id(1)
    pix, n_pix, p_ok, b, ho, wo = _output_pixels(p)

    def tap(i, j, carry):
        hi = ho * S + i - p["top"]
        wi = wo * S + j - p["left"]
        ok = p_ok & (hi >= 0) & (hi < p["h"]) & (wi >= 0) & (wi < p["w"])
        rows = (b * p["h"] + hi) * p["w"] + wi
        s = jnp.zeros((bp,), jnp.float32)
        for c0 in range(0, cg, bc):  # the group's channels, BLOCK_C at a time
            cc = c0 + _iota(bc)
            c_ok = cc < cg
            c = g * cg + cc
            dyv = _load(dy_ref, pix, c, p_ok[:, None] & c_ok[None, :], n_pix)
            xv = _load(x_ref, rows, c, ok[:, None] & c_ok[None, :], p["b"] * p["h"] * p["w"])
            s += jnp.sum(dyv * xv, axis=1)
        col = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
        _store(dk_ref, pix, col, s[:, None], p_ok[:, None])
        return carry

    _taps(p, tap, jnp.int32(0))


def _dx_kernel(k_ref, dy_ref, dx_ref, *, p):
    K, S, cg, bp, bc = p["k"], p["s"], p["cg"], p["bp"], p["bc"]
    g = pl.program_id(1) // p["n_cblk"]
    cc = (pl.program_id(1) % p["n_cblk"]) * bc + _iota(bc)
    c_ok = cc < cg
    c = g * cg + cc
    pix = pl.program_id(0) * bp + _iota(bp)  # flat input pixel (b, h, w)
    n_in = p["b"] * p["h"] * p["w"]
    n_out = p["b"] * p["ho"] * p["wo"]
    p_ok = pix < n_in
    w = pix % p["w"]
    h = (pix // p["w"]) % p["h"]
    b = pix // (p["w"] * p["h"])

    def tap(i, j, acc):
        hn = h + p["top"] - i  # = ho * S when output row ho reads this pixel at tap row i
        wn = w + p["left"] - j
        ho, wo = hn // S, wn // S
        ok = (p_ok & (hn >= 0) & (hn % S == 0) & (ho < p["ho"])
              & (wn >= 0) & (wn % S == 0) & (wo < p["wo"]))
        q = (b * p["ho"] + ho) * p["wo"] + wo  # output pixel
        col = jnp.full((1,), g * K * K + i * K + j, jnp.int32)
        wgt = _load(k_ref, q, col, ok[:, None], n_out)[:, 0]
        dyv = _load(dy_ref, q, c, ok[:, None] & c_ok[None, :], n_out)
        return acc + wgt[:, None] * dyv

    acc = _taps(p, tap, jnp.zeros((bp, bc), jnp.float32))
    _store(dx_ref, pix, c, acc, p_ok[:, None] & c_ok[None, :])


def _interpret() -> bool:
    return jax.default_backend() == "cpu"


def _call(kernel_fn, p, grid, out_shape, *args):
    return pl.pallas_call(
        functools.partial(kernel_fn, p=p),
        out_shape=out_shape,
        grid=grid,
        interpret=_interpret(),
        compiler_params=None if _interpret() else plgpu.CompilerParams(num_warps=4, num_stages=2),
    )(*args)


def _forward(x, kernel, kernel_size, stride, groups):
    b, h, w, c = x.shape
    p = _plan(b, h, w, c, kernel_size, stride, groups)
    n_pix = b * p["ho"] * p["wo"]
    out = _call(
        _fwd_kernel, p, (pl.cdiv(n_pix, p["bp"]), groups * p["n_cblk"]),
        jax.ShapeDtypeStruct((n_pix, c), x.dtype),
        x.reshape(b * h * w, c), kernel.reshape(n_pix, groups * kernel_size * kernel_size),
    )  # (B*Ho*Wo, C)
    return out.reshape(b, p["ho"], p["wo"], c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _aggregate(x, kernel, kernel_size, stride, groups):
    return _forward(x, kernel, kernel_size, stride, groups)


def _aggregate_fwd(x, kernel, kernel_size, stride, groups):
    return _forward(x, kernel, kernel_size, stride, groups), (x, kernel)


def _aggregate_bwd(kernel_size, stride, groups, res, dy):
    x, kernel = res
    b, h, w, c = x.shape
    p = _plan(b, h, w, c, kernel_size, stride, groups)
    n_out = b * p["ho"] * p["wo"]
    dy2 = dy.reshape(n_out, c)
    x2 = x.reshape(b * h * w, c)
    k2 = kernel.reshape(n_out, groups * kernel_size * kernel_size)
    dk = _call(_dk_kernel, p, (pl.cdiv(n_out, p["bp"]), groups),
               jax.ShapeDtypeStruct(k2.shape, kernel.dtype), x2, dy2)
    dx = _call(_dx_kernel, p, (pl.cdiv(b * h * w, p["bp"]), groups * p["n_cblk"]),
               jax.ShapeDtypeStruct(x2.shape, x.dtype), k2, dy2)
    return dx.reshape(x.shape), dk.reshape(kernel.shape)


_aggregate.defvjp(_aggregate_fwd, _aggregate_bwd)


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C); JAX arrays."""
    return _aggregate(x, kernel, kernel_size, stride, groups)
