"""The Triton kernels of `triton` and `triton_fused`, for every backend.

The kernels take pointers and integers only, so the same code runs under
PyTorch (`triton_torch`: Triton's own launcher) and JAX (`triton_jax`:
`jax_triton.triton_call`); this module imports neither.

Aggregation (`triton`): one program covers a tile of BLOCK_P output pixels
(consecutive flat pixels, or a 2-D tile: `tile_width`) x BLOCK_C channels of
one group; each tap is addressed from the tile's origin (`_window_origin`).
Each generated weight is loaded once per pixel and broadcast over the group's
channels; the input is read through masks, so no padded copy is made and no
patch tensor exists. Accumulation is in float32
whatever the input dtype. Backward:
- d_kernel[p, g, t] = sum over the group's channels of dy[p, c] * x[window_t(p), c]
- d_x: a gather over the output pixels whose window covers each input pixel,
  so no atomics are needed.

Generation on chip (`triton_fused`): in inference one program reads its
pixels' generation input (the input, average-pooled when stride > 1) and
computes the bottleneck, hidden = relu(pooled @ W_reduce' + b_reduce'), with
batch normalisation folded into W_reduce' and b_reduce'; for each tap t of its
group it makes the tap's weight w_t = hidden @ W_span[:, t] + b_span[t] and
accumulates w_t * x[window_t] as above, so the generated kernel
(B, Ho, Wo, G*K*K) never reaches memory. The bottleneck is recomputed by each
of a pixel tile's G * channel-block programs: R*C multiply-adds per pixel and
program, against reading and writing a G*K*K-float kernel per pixel in the
unfused layer (C = 64, R = 16, G = 4, K = 7: 4 * 1,024 on-chip MACs against
784 bytes of traffic). In training the layer computes the bottleneck (batch
statistics) and the same kernel reads it (FROM_HIDDEN); the backward
regenerates the weights (`_dgen_kernel`, `_dx_gen_kernel`).

Rows rolled, taps unrolled: every kernel loops over the window's K rows and
unrolls each row's K taps (ROWS = 1 row a loop step; INVOLUTION_UNROLL_WINDOW=1
gives ROWS = K, the whole window unrolled, for comparison on a GPU: see
`_common.rows_per_step`). With all K*K taps unrolled (up to version v4 in
docs/PERF.md), the compiler issued the whole window's loads ahead of the
arithmetic; compiled for sm_90 at K = 7, the forward kernel then held 170 to
255 registers a thread and spilled at 128-pixel tiles, leaving room for 8 to
12 of an SM's 64 warps, and each variant took seconds to compile, once per tile the
autotuner tries (`python -m bench.kernel_resources`, docs/PERF.md section 13).

Argument order: pointers to inputs, then integers, then pointers to outputs,
then compile-time constants. Triton's launcher takes them by name;
`jax_triton.triton_call` passes inputs and integers in signature order and
appends the outputs, which is why they come last.

On CUDA the kernels are compiled by Triton; elsewhere they run in Triton's
interpreter (`compiled(interpret=True)`): correct, slow, meant for tests on
machines without a GPU. Both can happen in one process because the kernels use
Triton builtins only: library helpers such as `tl.zeros` or `tl.sum` are
decorated when `triton.language` is imported and then work in one mode only
(the reductions pass Triton's own sum as `tl.reduce`'s combine function, which
both modes take: see `_sum`). The window arithmetic the kernels share is in
device functions (`_DeviceFunction`), which both modes call, and so is the
loop a kernel shares with its twin that makes the weights on chip
(`_window_sum`, `_input_gradient`).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from layers.aggregation._common import TILE_WIDTH, Geometry, bottleneck_block, rows_per_step, switch

# The combine function of every tl.reduce here: Triton's own sum. It is a
# JIT function like any other in compiled code, and the interpreter recognises
# it and sums with NumPy; with a combine function of our own, the interpreter
# calls it once per element in Python (a test case of `triton_fused` took 27 s
# instead of 3 s, 78 s of 84 s under a profiler in the reduction).
_sum = tl.standard._sum_combine


class _DeviceFunction(JITFunction):
    """A function the kernels call, in both modes. Compiled, it is a
    @triton.jit function like any other, inlined into its callers. The
    interpreter runs a kernel as Python, so it calls it as Python: in the form
    the interpreter rewrites kernels into, under the language its kernel's
    launch has already patched (a plain JITFunction refuses to be called
    outside a compiled kernel)."""

    def __init__(self, fn) -> None:
        super().__init__(fn)
        self._interpreted = InterpretedFunction(fn)

    def __call__(self, *args, **kwargs):
        return self._interpreted.rewrite()(*args, **kwargs)


# --- Device functions: the window arithmetic every kernel shares. -------------


@_DeviceFunction
def _output_pixels(n_pix, HO, WO, BLOCK_P: tl.constexpr, TILE_W: tl.constexpr):
    """The program's BLOCK_P output pixels (program_id(0) counts tiles): flat
    index p over (b, ho, wo), whether it exists, and b, ho, wo. TILE_W = 0:
    BLOCK_P consecutive flat pixels (a tile can span image rows and batch
    items); else a 2-D tile of BLOCK_P / TILE_W rows of TILE_W pixels in one
    image (see `tile_width`)."""
    if TILE_W == 0:
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # (P,)
        p_ok = p < n_pix
        wo = p % WO
        ho = (p // WO) % HO
        b = p // (WO * HO)
    else:
        TILE_H: tl.constexpr = BLOCK_P // TILE_W
        tiles_w = (WO + TILE_W - 1) // TILE_W
        tiles_h = (HO + TILE_H - 1) // TILE_H
        tile = tl.program_id(0)
        lp = tl.arange(0, BLOCK_P)  # (P,) pixel within the tile, row-major
        wo = (tile % tiles_w) * TILE_W + lp % TILE_W
        ho = ((tile // tiles_w) % tiles_h) * TILE_H + lp // TILE_W
        b = tile // (tiles_w * tiles_h)
        p_ok = (ho < HO) & (wo < WO)
        p = (b * HO + ho) * WO + wo
    return p, p_ok, b, ho, wo


@_DeviceFunction
def _channel_block(N_CBLK, CG, BLOCK_C: tl.constexpr):
    """The program's group g and BLOCK_C of its channels (program_id(1)
    counts groups x channel blocks): the channels' index in the tensor and
    whether they belong to the group."""
    pid_gc = tl.program_id(1)
    g = pid_gc // N_CBLK
    cc = (pid_gc % N_CBLK) * BLOCK_C + tl.arange(0, BLOCK_C)  # (C,) channel within group
    return g, g * CG + cc, cc < CG


@_DeviceFunction
def _window_origin(b, ho, wo, H, W, STRIDE: tl.constexpr, PAD_T, PAD_L):
    """The input pixel under tap (0, 0) of each output pixel's window (flat,
    int64; outside the image at its edges). Tap (i, j) is this pixel plus
    i * W + j: the same scalar for every pixel of the tile, so a tap costs
    one addition to a pointer, not an address computed per pixel."""
    return _pixel(b, ho * STRIDE - PAD_T, wo * STRIDE - PAD_L, H, W)


@_DeviceFunction
def _window_row(ho, p_ok, i, H, STRIDE: tl.constexpr, PAD_T):
    """Whether each output pixel exists and row i of its window lies in the image."""
    hi = ho * STRIDE + i - PAD_T
    return p_ok & (hi >= 0) & (hi < H)


@_DeviceFunction
def _window_column(wo, h_ok, j, W, STRIDE: tl.constexpr, PAD_L):
    """Whether tap (i, j) of each output pixel's window lies in the image,
    from its row's `h_ok`."""
    wi = wo * STRIDE + j - PAD_L
    return h_ok & (wi >= 0) & (wi < W)


@_DeviceFunction
def _pixel(b, h, w, H, W):
    """The flat index of pixel (b, h, w) of a (B, H, W, .) tensor, in int64."""
    return ((b * H + h) * W + w).to(tl.int64)


@_DeviceFunction
def _input_pixels(n_pix, H, W, PAD_T, PAD_L, STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, TILE_W: tl.constexpr):
    """The program's BLOCK_P input pixels, for the input-gradient kernels,
    which run by stride phase (see `_dx_kernel`): n_pix counts one phase's
    pixels (B * ceil(H/s) * ceil(W/s)) and program_id(0) counts tiles
    phase-major, BLOCK_P consecutive pixels of the phase (TILE_W = 0) or 2-D
    tiles of its pixels TILE_W wide (see `tile_width`). Returns the index q
    within the phase, whether the pixel exists, b, h, w, and the phase's first
    tap row and column."""
    if TILE_W > 0:
        HP = (H + STRIDE - 1) // STRIDE  # the phase's rows and columns (the largest phase's)
        WP = (W + STRIDE - 1) // STRIDE
        TILE_H: tl.constexpr = BLOCK_P // TILE_W
        tiles_w = (WP + TILE_W - 1) // TILE_W
        tiles_h = (HP + TILE_H - 1) // TILE_H
        tiles = (n_pix // (HP * WP)) * tiles_h * tiles_w  # a phase's
        phase = tl.program_id(0) // tiles
        tile = tl.program_id(0) % tiles
        lp = tl.arange(0, BLOCK_P)  # (P,) pixel within the tile, row-major
        wp = (tile % tiles_w) * TILE_W + lp % TILE_W
        hp = ((tile // tiles_w) % tiles_h) * TILE_H + lp // TILE_W
        b = tile // (tiles_w * tiles_h)
        w = (phase % STRIDE) + wp * STRIDE
        h = (phase // STRIDE) + hp * STRIDE
        q = (b * HP + hp) * WP + wp  # at stride 1 the flat pixel index, as `_input_offset` takes it
        q_ok = (hp < HP) & (wp < WP) & (h < H) & (w < W)
        i_first = (phase // STRIDE + PAD_T) % STRIDE
        j_first = (phase % STRIDE + PAD_L) % STRIDE
    elif STRIDE == 1:  # one phase: the flat pixel index, and the binaries of the kernels without phases
        q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # (P,)
        w = q % W
        h = (q // W) % H
        b = q // (W * H)
        q_ok = q < n_pix
        i_first = 0
        j_first = 0
    else:
        tiles = (n_pix + BLOCK_P - 1) // BLOCK_P
        phase = tl.program_id(0) // tiles
        q = (tl.program_id(0) % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)  # (P,)
        HP = (H + STRIDE - 1) // STRIDE
        WP = (W + STRIDE - 1) // STRIDE
        w = (phase % STRIDE) + (q % WP) * STRIDE
        h = (phase // STRIDE) + ((q // WP) % HP) * STRIDE
        b = q // (WP * HP)
        q_ok = (q < n_pix) & (h < H) & (w < W)
        i_first = (phase // STRIDE + PAD_T) % STRIDE
        j_first = (phase % STRIDE + PAD_L) % STRIDE
    return q, q_ok, b, h, w, i_first, j_first


@_DeviceFunction
def _reader_origin(b, h, w, i_first, j_first, HO, WO, STRIDE: tl.constexpr, PAD_T, PAD_L):
    """The output pixel whose window reads each input pixel at its phase's
    first tap (i_first, j_first): its row, column and flat index (int64).
    The phase's tap r rows and d columns further on, (i_first + r * STRIDE,
    j_first + d * STRIDE), is read by output pixel (ho0 - r, wo0 - d), whose
    flat index is the origin's minus r * WO + d, the same scalar for every
    pixel of the tile. (h + PAD_T - i_first is a non-negative multiple of
    STRIDE: i_first is its residue, see `_input_pixels`.)"""
    ho0 = (h + PAD_T - i_first) // STRIDE
    wo0 = (w + PAD_L - j_first) // STRIDE
    return ho0, wo0, _pixel(b, ho0, wo0, HO, WO)


@_DeviceFunction
def _reader_row(ho0, q_ok, r, i, HO, K: tl.constexpr, STRIDE: tl.constexpr):
    """Whether output row ho0 - r, whose window reads each input pixel at
    tap row i, exists."""
    ho = ho0 - r
    ok = q_ok & (ho >= 0) & (ho < HO)
    if STRIDE > 1:  # a phase's last row can fall outside the window
        # tl.where, not `&`, with a scalar condition: Triton's interpreter gives `vector & scalar`
        # masks int32 data, which its loads refuse
        ok = tl.where(i < K, ok, False)
    return ok


@_DeviceFunction
def _reader_column(wo0, h_ok, d, j, WO, K: tl.constexpr, STRIDE: tl.constexpr):
    """Whether output pixel (ho0 - r, wo0 - d), which reads each input pixel
    at tap (i, j), exists, from its row's `h_ok`."""
    wo = wo0 - d
    ok = h_ok & (wo >= 0) & (wo < WO)
    if STRIDE > 1:
        ok = tl.where(j < K, ok, False)
    return ok


@_DeviceFunction
def _input_offset(q, b, h, w, H, W, C, STRIDE: tl.constexpr):
    """The offset of an input pixel's channel 0 (int64), from `_input_pixels`."""
    if STRIDE == 1:  # the flat index, as without phases
        row = q.to(tl.int64) * C
    else:
        row = _pixel(b, h, w, H, W) * C
    return row


@_DeviceFunction
def _tile(ptr, row, col, row_ok, col_ok):
    """ptr[row[p] + col[c]] as a (P, C) float32 tile, zero where the row or
    column is out."""
    return tl.load(ptr + row[:, None] + col[None, :], mask=row_ok[:, None] & col_ok[None, :],
                   other=0.0).to(tl.float32)


@_DeviceFunction
def _put(ptr, row, col, row_ok, col_ok, value):
    """Store a (P, C) tile at ptr[row[p] + col[c]], in ptr's dtype."""
    tl.store(ptr + row[:, None] + col[None, :], value.to(ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@_DeviceFunction
def _generated_weight(hidden, ws_ptr, bs_ptr, r, r_ok, t, GKK):
    """Generated channel t of each pixel from its bottleneck hidden (P, R):
    hidden @ W_span[:, t] + b_span[t], (P,) float32."""
    ws = tl.load(ws_ptr + r * GKK + t, mask=r_ok, other=0.0)  # (R,)
    return tl.reduce(hidden * ws[None, :], 1, _sum) + tl.load(bs_ptr + t)  # (P,)


@_DeviceFunction
def _window_sum(x_ptr, x_origin, k_row, hidden, ws_ptr, bs_ptr, r, r_ok, g, c, c_ok, p_ok, ho, wo, H, W, C, GKK,
                K: tl.constexpr, STRIDE: tl.constexpr, PAD_T, PAD_L, ROWS: tl.constexpr, BLOCK_P: tl.constexpr,
                BLOCK_C: tl.constexpr, GENERATE: tl.constexpr):
    """The aggregation of `_fwd_kernel` and `_fused_kernel`: the sum over the
    window's taps of each output pixel's weight times the input there, a
    (P, C) float32 tile. Each weight is read from the generated kernel
    (k_row: each pixel's pointer to its group's K*K weights), or, with
    GENERATE, made from the pixel's bottleneck (hidden, (P, R)) and W_span,
    b_span (`_generated_weight`); the arguments of the other way are not
    read (None)."""
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see the module docstring)
        for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
            i = i0 + di
            h_ok = _window_row(ho, p_ok, i, H, STRIDE, PAD_T)
            for j in tl.static_range(K):
                ok = _window_column(wo, h_ok, j, W, STRIDE, PAD_L)
                if GENERATE:
                    wgt = _generated_weight(hidden, ws_ptr, bs_ptr, r, r_ok, g * (K * K) + i * K + j, GKK)  # (P,)
                else:
                    wgt = tl.load(k_row + (i * K + j), mask=p_ok, other=0.0).to(tl.float32)  # (P,)
                acc += wgt[:, None] * _tile(x_ptr + (i * W + j) * C, x_origin, c, ok, c_ok)  # (P, C)
    return acc


@_DeviceFunction
def _input_gradient(k_ptr, h_ptr, ws_ptr, bs_ptr, dy_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, R,
                    dx_ptr, K: tl.constexpr, STRIDE: tl.constexpr, ROWS: tl.constexpr, TILE_W: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, GENERATE: tl.constexpr):
    """The input gradient's gather, for `_dx_kernel` and `_dx_gen_kernel`:
    d_x of the program's input pixels (one stride phase's) and channels, over
    the phase's taps. Each tap's weight is read from the generated kernel
    (k_ptr, G*K*K per pixel), or, with GENERATE, made again from the reading
    pixel's hidden tensor (h_ptr, R per pixel) and W_span, b_span (ws_ptr,
    bs_ptr). The arguments of the other way are not read (None)."""
    g, c, c_ok = _channel_block(N_CBLK, CG, BLOCK_C)
    q, q_ok, b, h, w, i_first, j_first = _input_pixels(n_pix, H, W, PAD_T, PAD_L, STRIDE, BLOCK_P, TILE_W)
    ho0, wo0, p0 = _reader_origin(b, h, w, i_first, j_first, HO, WO, STRIDE, PAD_T, PAD_L)  # (P,) each
    TAPS: tl.constexpr = (K + STRIDE - 1) // STRIDE  # rows (columns) of the window a phase uses
    G = C // CG
    GKK = G * K * K
    if GENERATE:
        h_origin = p0 * R
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R
    else:
        k_origin = p0 * GKK
    dy_origin = p0 * C
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for r0 in range(0, TAPS, ROWS):  # the phase's rows: a loop of ROWS-row steps (see the module docstring)
        for dr in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
            i = i_first + (r0 + dr) * STRIDE
            h_ok = _reader_row(ho0, q_ok, r0 + dr, i, HO, K, STRIDE)
            for dj in tl.static_range(TAPS):
                j = j_first + dj * STRIDE
                ok = _reader_column(wo0, h_ok, dj, j, WO, K, STRIDE)
                dp = (r0 + dr) * WO + dj  # the reading output pixel is p0 - dp
                if GENERATE:
                    t = g * (K * K) + i * K + j
                    if STRIDE > 1:  # a phase's last tap can fall outside the window (masked by `ok`): its
                        # weight is read at a tap inside, a finite number that multiplies zeros
                        t = g * (K * K) + tl.minimum(i, K - 1) * K + tl.minimum(j, K - 1)
                    hp = _tile(h_ptr - dp * R, h_origin, r, ok, r_ok)  # (P, R) the reading pixels' bottleneck
                    wgt = _generated_weight(hp, ws_ptr, bs_ptr, r, r_ok, t, GKK)  # (P,)
                else:
                    wgt = tl.load(k_ptr + (g * (K * K) + i * K + j - dp * GKK) + k_origin,
                                  mask=ok, other=0.0).to(tl.float32)  # (P,)
                acc += wgt[:, None] * _tile(dy_ptr - dp * C, dy_origin, c, ok, c_ok)  # (P, C)
    _put(dx_ptr, _input_offset(q, b, h, w, H, W, C, STRIDE), c, q_ok, c_ok, acc)


# --- Kernels. -------------------------------------------------------------------


def _fwd_kernel(x_ptr, k_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, o_ptr,
                K: tl.constexpr, STRIDE: tl.constexpr, C_DIV: tl.constexpr, CG_DIV: tl.constexpr, ROWS: tl.constexpr,
                TILE_W: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    C = (C // C_DIV) * C_DIV  # = C, and the compiler now knows C_DIV divides it (see `divisibility`)
    CG = (CG // CG_DIV) * CG_DIV
    g, c, c_ok = _channel_block(N_CBLK, CG, BLOCK_C)
    p, p_ok, b, ho, wo = _output_pixels(n_pix, HO, WO, BLOCK_P, TILE_W)
    G = C // CG
    k_row = k_ptr + p.to(tl.int64) * (G * K * K) + g * (K * K)
    x_origin = _window_origin(b, ho, wo, H, W, STRIDE, PAD_T, PAD_L) * C  # (P,)
    acc = _window_sum(x_ptr, x_origin, k_row, None, None, None, None, None, g, c, c_ok, p_ok, ho, wo, H, W, C, None,
                      K, STRIDE, PAD_T, PAD_L, ROWS, BLOCK_P, BLOCK_C, False)  # (P, C)
    _put(o_ptr, p.to(tl.int64) * C, c, p_ok, c_ok, acc)


def _dk_kernel(x_ptr, dy_ptr, n_pix, H, W, C, HO, WO, CG, PAD_T, PAD_L, dk_ptr, K: tl.constexpr,
               STRIDE: tl.constexpr, C_DIV: tl.constexpr, CG_DIV: tl.constexpr, ROWS: tl.constexpr,
               TILE_W: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """d_kernel[p, g, t] = sum over g's channels of dy[p, c] * x[window_t(p), c].
    The output gradient is loaded once per tile (and channel block), not once
    per tap; with more than one block (groups of over 64 channels) each tap's
    sum is completed in memory by the program that owns it, in float32 (see
    `kernel_grad_in_float32`)."""
    C = (C // C_DIV) * C_DIV  # = C, and the compiler now knows C_DIV divides it (see `divisibility`)
    CG = (CG // CG_DIV) * CG_DIV
    g = tl.program_id(1)
    p, p_ok, b, ho, wo = _output_pixels(n_pix, HO, WO, BLOCK_P, TILE_W)
    G = C // CG
    dy_row = p.to(tl.int64) * C
    dk_row = dk_ptr + p.to(tl.int64) * (G * K * K) + g * (K * K)
    x_origin = _window_origin(b, ho, wo, H, W, STRIDE, PAD_T, PAD_L) * C  # (P,)
    for c0 in range(0, CG, BLOCK_C):  # the group's channels: one block unless CG > 64
        cc = c0 + tl.arange(0, BLOCK_C)
        c = g * CG + cc
        c_ok = cc < CG
        dyv = _tile(dy_ptr, dy_row, c, p_ok, c_ok)  # (P, C), for every tap
        for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see the module docstring)
            for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
                i = i0 + di
                h_ok = _window_row(ho, p_ok, i, H, STRIDE, PAD_T)
                for j in tl.static_range(K):
                    ok = _window_column(wo, h_ok, j, W, STRIDE, PAD_L)
                    s = tl.reduce(dyv * _tile(x_ptr + (i * W + j) * C, x_origin, c, ok, c_ok), 1, _sum)  # (P,)
                    if c0 > 0:  # a later channel block: add to the earlier blocks' sum
                        s += tl.load(dk_row + (i * K + j), mask=p_ok, other=0.0).to(tl.float32)
                    tl.store(dk_row + (i * K + j), s.to(dk_ptr.dtype.element_ty), mask=p_ok)


def _dx_kernel(k_ptr, dy_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, dx_ptr,
               K: tl.constexpr, STRIDE: tl.constexpr, C_DIV: tl.constexpr, CG_DIV: tl.constexpr, ROWS: tl.constexpr,
               TILE_W: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """d_x[q, c] = sum over the taps t and output pixels p whose window_t(p)
    is q of kernel[p, g, t] * dy[p, c]: a gather, so no atomics. Split by
    stride phase (see `Geometry.phase_pixels`): an input pixel is read by the taps
    whose row i and column j are congruent to its own phase, ceil(K/s)^2 of
    the K^2, and a program's pixels share one phase, so it loops over those
    taps only (at stride 2, K = 7: 16 of 49). The loop is `_input_gradient`'s."""
    C = (C // C_DIV) * C_DIV  # = C, and the compiler now knows C_DIV divides it (see `divisibility`)
    CG = (CG // CG_DIV) * CG_DIV
    _input_gradient(k_ptr, None, None, None, dy_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, None, dx_ptr,
                    K, STRIDE, ROWS, TILE_W, BLOCK_P, BLOCK_C, None, False)


def _fused_kernel(x_ptr, xg_ptr, wr_ptr, br_ptr, ws_ptr, bs_ptr,
                  n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, R, o_ptr,
                  K: tl.constexpr, STRIDE: tl.constexpr, C_DIV: tl.constexpr, CG_DIV: tl.constexpr,
                  R_DIV: tl.constexpr, ROWS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                  FROM_HIDDEN: tl.constexpr, TILE_W: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_CIN: tl.constexpr):
    C = (C // C_DIV) * C_DIV  # = C, and the compiler now knows C_DIV divides it (see `divisibility`)
    CG = (CG // CG_DIV) * CG_DIV
    R = (R // R_DIV) * R_DIV
    g, c, c_ok = _channel_block(N_CBLK, CG, BLOCK_C)
    p, p_ok, b, ho, wo = _output_pixels(n_pix, HO, WO, BLOCK_P, TILE_W)
    G = C // CG
    GKK = G * K * K

    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    if FROM_HIDDEN:
        # 1'. Training: the layer computed the bottleneck (batch statistics);
        # xg_ptr is that hidden tensor (n_pix, R).
        hidden = _tile(xg_ptr, p.to(tl.int64) * R, r, p_ok, r_ok)  # (P, R)
    else:
        # 1. The bottleneck on chip: hidden = relu(pooled @ W_reduce' + b_reduce').
        xg_row = p.to(tl.int64) * C
        hidden = tl.full((BLOCK_P, BLOCK_R), 0.0, tl.float32)
        for c0 in range(0, C, BLOCK_CIN):
            ci = c0 + tl.arange(0, BLOCK_CIN)
            ci_ok = ci < C
            xg = _tile(xg_ptr, xg_row, ci, p_ok, ci_ok)  # (P, CIN)
            wr = tl.load(wr_ptr + ci[:, None] * R + r[None, :],
                         mask=ci_ok[:, None] & r_ok[None, :], other=0.0)  # (CIN, R)
            hidden = tl.dot(xg, wr, hidden, input_precision=DOT_PRECISION)  # (P, R)
        hidden = tl.maximum(hidden + tl.load(br_ptr + r, mask=r_ok, other=0.0)[None, :], 0.0)

    # 2. Each tap's weight from the bottleneck, then the aggregation.
    x_origin = _window_origin(b, ho, wo, H, W, STRIDE, PAD_T, PAD_L) * C  # (P,)
    acc = _window_sum(x_ptr, x_origin, None, hidden, ws_ptr, bs_ptr, r, r_ok, g, c, c_ok, p_ok, ho, wo, H, W, C, GKK,
                      K, STRIDE, PAD_T, PAD_L, ROWS, BLOCK_P, BLOCK_C, True)  # (P, C)
    _put(o_ptr, p.to(tl.int64) * C, c, p_ok, c_ok, acc)


def _dgen_kernel(x_ptr, dy_ptr, h_ptr, ws_ptr, n_pix, H, W, C, HO, WO, CG, PAD_T, PAD_L, R, dh_ptr, dws_ptr,
                 dbs_ptr, K: tl.constexpr, STRIDE: tl.constexpr, C_DIV: tl.constexpr, CG_DIV: tl.constexpr,
                 R_DIV: tl.constexpr, ROWS: tl.constexpr, TILE_W: tl.constexpr, BLOCK_P: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    """Backward through the generated weights, which stay on chip. One
    program per pixel tile, over every group: per tap t of group g,
    d_w_t[p] = sum over g's channels of dy[p, c] * x[window_t(p), c] (as
    `_dk_kernel`), then at once
        d_hidden[p, :]  += d_w_t[p] * W_span[:, t]        (kept on chip)
        d_W_span[:, t]   = sum_p hidden[p, :] * d_w_t[p]  (this tile's share)
        d_b_span[t]      = sum_p d_w_t[p]                  (likewise)
    The tiles' shares are summed by the caller, so no atomics are needed."""
    C = (C // C_DIV) * C_DIV  # = C, and the compiler now knows C_DIV divides it (see `divisibility`)
    CG = (CG // CG_DIV) * CG_DIV
    R = (R // R_DIV) * R_DIV
    pid_p = tl.program_id(0)
    p, p_ok, b, ho, wo = _output_pixels(n_pix, HO, WO, BLOCK_P, TILE_W)
    G = C // CG
    GKK = G * K * K
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    h_row = p.to(tl.int64) * R
    hidden = _tile(h_ptr, h_row, r, p_ok, r_ok)  # (P, R)
    d_hidden = tl.full((BLOCK_P, BLOCK_R), 0.0, tl.float32)
    dy_row = p.to(tl.int64) * C
    x_origin = _window_origin(b, ho, wo, H, W, STRIDE, PAD_T, PAD_L) * C  # (P,)
    for g in range(G):
        for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see the module docstring)
            for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
                i = i0 + di
                h_ok = _window_row(ho, p_ok, i, H, STRIDE, PAD_T)
                for j in tl.static_range(K):
                    ok = _window_column(wo, h_ok, j, W, STRIDE, PAD_L)
                    x_tap = x_ptr + (i * W + j) * C
                    d_w = tl.full((BLOCK_P,), 0.0, tl.float32)
                    for c0 in range(0, CG, BLOCK_C):
                        cc = c0 + tl.arange(0, BLOCK_C)
                        c = g * CG + cc
                        c_ok = cc < CG
                        d_w += tl.reduce(_tile(dy_ptr, dy_row, c, p_ok, c_ok) * _tile(x_tap, x_origin, c, ok, c_ok),
                                         1, _sum)  # (P,)
                    t = g * (K * K) + i * K + j
                    ws = tl.load(ws_ptr + r * GKK + t, mask=r_ok, other=0.0)  # (R,)
                    d_hidden += d_w[:, None] * ws[None, :]  # (P, R)
                    tl.store(dws_ptr + (pid_p * R + r).to(tl.int64) * GKK + t,
                             tl.reduce(hidden * d_w[:, None], 0, _sum), mask=r_ok)  # (R,)
                    tl.store(dbs_ptr + pid_p.to(tl.int64) * GKK + t, tl.reduce(d_w, 0, _sum))
    _put(dh_ptr, h_row, r, p_ok, r_ok, d_hidden)


def _dx_gen_kernel(h_ptr, ws_ptr, bs_ptr, dy_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, R, dx_ptr,
                   K: tl.constexpr, STRIDE: tl.constexpr, C_DIV: tl.constexpr, CG_DIV: tl.constexpr,
                   R_DIV: tl.constexpr, ROWS: tl.constexpr, TILE_W: tl.constexpr, BLOCK_P: tl.constexpr,
                   BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    """d_x as `_dx_kernel` (by stride phase), each weight generated again
    from the hidden tensor of the output pixel that reads this input pixel."""
    C = (C // C_DIV) * C_DIV  # = C, and the compiler now knows C_DIV divides it (see `divisibility`)
    CG = (CG // CG_DIV) * CG_DIV
    R = (R // R_DIV) * R_DIV
    _input_gradient(None, h_ptr, ws_ptr, bs_ptr, dy_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, R, dx_ptr,
                    K, STRIDE, ROWS, TILE_W, BLOCK_P, BLOCK_C, BLOCK_R, True)


# Tile shapes autotuned per geometry on CUDA (the first call of a geometry
# times each; benchmarks exclude it as warm-up). BLOCK_C is not tuned: it is
# the group's channels (up to 64) so each weight is loaded once per pixel.
_CONFIGS = [
    triton.Config({"BLOCK_P": block_p}, num_warps=warps, num_stages=2)
    for block_p, warps in ((32, 2), (64, 4), (128, 4), (128, 8), (256, 8))
]
_KEY = ["n_pix", "C", "CG", "K", "STRIDE"]
# Integer arguments Triton would otherwise specialise on (value 1, multiple of
# 16), compiling the kernel again for each new image size or batch. C and CG
# stay specialised: they set the alignment of the channel loads.
_SHAPE_ARGS = ["n_pix", "H", "W", "HO", "WO", "N_CBLK", "PAD_T", "PAD_L"]


def _shape_args(kernel) -> list[str]:
    names = kernel.__code__.co_varnames[: kernel.__code__.co_argcount]
    return [name for name in _SHAPE_ARGS if name in names]


def _tuning_bench(kernel_call, quantiles):
    """Triton's do_bench with 5 ms of warm-up and 25 ms of repeats per
    configuration instead of its defaults of 25 + 100 ms: a sweep pays the
    tuning once per geometry and kernel, and this cuts it about four times."""
    import triton.testing

    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


def _autotune() -> bool:
    return os.environ.get("INVOLUTION_TRITON_AUTOTUNE", "1") != "0"


class Kernels(NamedTuple):
    """The six kernels, as one backend launches them (interpreted, or
    compiled for CUDA: JITFunctions, autotuned ones wrapped in Autotuners)."""

    forward: Any  # _fwd_kernel: x, kernel -> out
    kernel_grad: Any  # _dk_kernel: x, dy -> d_kernel
    input_grad: Any  # _dx_kernel: kernel, dy -> d_x
    fused: Any  # _fused_kernel: x, pooled or hidden, generation weights -> out
    generation_grad: Any  # _dgen_kernel: x, dy, hidden, W_span -> d_hidden, tiles' d_W_span, d_b_span (not autotuned)
    input_grad_generated: Any  # _dx_gen_kernel: hidden, W_span, b_span, dy -> d_x


AGGREGATION = ("forward", "kernel_grad", "input_grad")  # `triton`'s; the others are `triton_fused`'s
SOURCES = Kernels(_fwd_kernel, _dk_kernel, _dx_kernel, _fused_kernel, _dgen_kernel, _dx_gen_kernel)
# The kernels whose launch grid runs once per stride phase (see `_dx_kernel`).
_BY_PHASE = (_dx_kernel, _dx_gen_kernel)
# Extra autotuning keys: the fused kernels compile apart for each R and mode.
_EXTRA_KEYS = {"_fused_kernel": ["R", "FROM_HIDDEN"], "_dx_gen_kernel": ["R"]}


def check_interpreter() -> None:
    """Refuse, in one line, the pair that cannot interpret the kernels:
    Triton 3.6's interpreter takes a runtime integer (a loop bound such as
    CG) as a one-element array and calls int() on it, which NumPy 2.4 made
    an error (deprecated since 1.25); Triton 3.7 reads the element. Triton
    3.6 is what PyTorch 2.11 brings, so `triton>=3.6` stays allowed."""
    import numpy as np
    from packaging.version import Version

    if Version(triton.__version__) < Version("3.7") and Version(np.__version__) >= Version("2.4"):
        raise RuntimeError(
            f"Triton {triton.__version__}'s interpreter, which runs the Triton kernels on a CPU, fails with NumPy "
            f"2.4 or later; install numpy<2.4 or triton>=3.7. Received: triton=={triton.__version__}, "
            f"numpy=={np.__version__}")


@functools.cache
def compiled(interpret: bool) -> Kernels:
    """The kernels wrapped by Triton's interpreter (`check_interpreter`), or
    compiled for CUDA (autotuned over _CONFIGS unless
    INVOLUTION_TRITON_AUTOTUNE=0). The backward through the generation is
    never autotuned: its per-tile partial sums are sized by BLOCK_P."""
    if interpret:
        check_interpreter()
        return Kernels(*(InterpretedFunction(kernel) for kernel in SOURCES))
    built = []
    for kernel in SOURCES:
        jit = triton.jit(kernel, do_not_specialize=_shape_args(kernel))
        if _autotune() and kernel is not _dgen_kernel:
            key = _KEY + _EXTRA_KEYS.get(kernel.__name__, [])
            jit = triton.autotune(configs=_CONFIGS, key=key, do_bench=_tuning_bench)(jit)
        built.append(jit)
    return Kernels(*built)


def autotuned(kernel) -> bool:
    """Whether Triton's autotuner picks this kernel's BLOCK_P."""
    return isinstance(kernel, triton.runtime.Autotuner)


def autotuner_choices() -> dict[tuple[str, tuple], str]:
    """Every tile Triton's autotuner has chosen in this process: {(kernel
    name, autotuning key): "BLOCK_P x warps"}, e.g. "64x4". Empty until a
    launch on CUDA has been tuned (the interpreter does not tune). A sweep
    records each choice with the case that made it, so that a GPU run says
    which tiles ever win, the evidence for pruning the others."""
    return {(_source(kernel).__name__, key): f"{config.kwargs['BLOCK_P']}x{config.num_warps}"
            for kernel in compiled(False) if autotuned(kernel) for key, config in kernel.cache.items()}


def _source(kernel):
    """The Python function under an Autotuner, JITFunction or InterpretedFunction."""
    while hasattr(kernel, "fn"):
        kernel = kernel.fn
    return kernel


def tile_width() -> int:
    """The width of every kernel's pixel tiles, TILE_W: 0, the default, for
    BLOCK_P consecutive flat pixels (one or a few image rows, so each input
    row is read again by the programs of the output rows around it);
    INVOLUTION_TILE_WIDTH=N for 2-D tiles BLOCK_P / N rows high and N pixels
    wide (of one stride phase's pixels for the input gradients), whose
    programs read fewer input rows per pixel (an 8 x 8 tile at K = 7 reads
    14 x 14 input pixels, a 64-pixel row segment 7 x 70), so that a GPU
    session can time both from one commit. A kernel argument: the two
    compile apart."""
    value = switch(TILE_WIDTH)
    if value not in _TILE_WIDTHS:
        raise ValueError(f"{TILE_WIDTH} sets the Triton kernels' tile width: 0 (flat tiles) or a power of "
                         f"two up to {_TILE_WIDTHS[-1]}. Received: {TILE_WIDTH}={value!r}")
    return int(value)


# Up to the smallest BLOCK_P the autotuner tries, so every tile is at least one row high.
_TILE_WIDTHS = tuple(str(n) for n in (0, 1, 2, 4, 8, 16, min(config.kwargs["BLOCK_P"] for config in _CONFIGS)))


def phases(kernel, geo: Geometry) -> int:
    """How many tile grids of `pixels` the kernel's launch holds: one per
    stride phase (s^2) for the input-gradient kernels, which take the pixels
    of one phase (`Geometry.phase_pixels`), else 1."""
    return geo.stride**2 if _source(kernel) in _BY_PHASE else 1


def tiles(kernel, geo: Geometry, pixels: int, block_p: int) -> int:
    """Programs along the launch grid's axis 0: tiles of `block_p` of the
    `pixels` (flat, or the 2-D tiles of `tile_width` over the output image or
    one phase's pixels of the input), times the stride phases (`phases`)."""
    width = tile_width()
    if not width:
        return phases(kernel, geo) * triton.cdiv(pixels, block_p)
    if _source(kernel) in _BY_PHASE:
        rows, columns = -(-geo.height // geo.stride), -(-geo.width // geo.stride)
    else:
        rows, columns = geo.out_height, geo.out_width
    return phases(kernel, geo) * geo.batch * triton.cdiv(rows, block_p // width) * triton.cdiv(columns, width)


def grid(kernel, geo: Geometry, pixels: int, programs: int):
    """The launch grid over (pixel tiles, `programs`): from the autotuner's
    BLOCK_P when it tunes the kernel, else from the geometry's (`tiles`)."""
    if autotuned(kernel):
        return lambda meta: (tiles(kernel, geo, pixels, meta["BLOCK_P"]), programs)
    return (tiles(kernel, geo, pixels, geo.block_p), programs)


def constants(kernel, geo: Geometry) -> dict:
    """The tile constants the caller passes: TILE_W and BLOCK_C always,
    BLOCK_P unless the autotuner picks it."""
    chosen = {"TILE_W": tile_width(), "BLOCK_C": geo.block_c}
    return chosen if autotuned(kernel) else {**chosen, "BLOCK_P": geo.block_p}


# Triton contracts a * b + c into one fused multiply-add unless told not to.
# Every kernel so far was built with it (the default up to Triton 3.9, which
# warns that 3.10 turns it off): pinned on, so that a newer Triton changes
# neither the binaries nor their rounding without a commit that says so. The
# launchers (`launch`, `triton_jax`) and `bench.kernel_resources` pass it.
FP_FUSION = True


def launch(kernel, geo: Geometry, pixels: int, programs: int, **arguments) -> None:
    """Launch with Triton's own launcher, every argument by name (tensors
    with `data_ptr`, as Triton takes them); the interpreter ignores the
    compiler's options."""
    kernel[grid(kernel, geo, pixels, programs)](**constants(kernel, geo), **arguments, enable_fp_fusion=FP_FUSION)


def divisibility(n: int) -> int:
    """The divisibility hint of an integer argument (C_DIV, CG_DIV, R_DIV):
    16 when 16 divides it, else 1. Triton's own launcher specialises integer
    arguments on this (PyTorch); jax-triton does not, and without it the
    compiler cannot prove the channel rows aligned nor the channel masks
    constant over 16 lanes, and issues scalar loads instead of 128-bit ones
    (the stage-1 forward kernel for sm_90: 112 scalar global loads, against
    14 vector and 14 scalar with the hint, as on PyTorch). The kernels
    rewrite C as (C // C_DIV) * C_DIV, the same value, from which the
    compiler infers it; `tl.multiple_of` does not apply to a kernel's
    arguments."""
    return 16 if n % 16 == 0 else 1


def _hint(n: int, hints: bool) -> int:
    return divisibility(n) if hints else 1


def sizes(geo: Geometry, hints: bool = False) -> dict:
    """The integer arguments and constants every kernel takes, by name.
    `hints`: the divisibility constants for a caller whose launcher does not
    specialise integers (jax-triton); with Triton's own launcher they stay 1,
    so that its binaries are those it made before the constants existed (with
    them, some generating kernels took up to 55 more registers a thread)."""
    return dict(H=geo.height, W=geo.width, C=geo.channels, HO=geo.out_height, WO=geo.out_width,
                CG=geo.group_channels, PAD_T=geo.pad_top, PAD_L=geo.pad_left, K=geo.kernel_size,
                STRIDE=geo.stride, C_DIV=_hint(geo.channels, hints), CG_DIV=_hint(geo.group_channels, hints),
                ROWS=rows_per_step(geo.kernel_size))


def bottleneck(reduced: int, hints: bool = False) -> dict:
    """The arguments of the generating kernels that the bottleneck's width
    R (C / reduction ratio) sets (`hints`: as in `sizes`)."""
    return dict(R=reduced, R_DIV=_hint(reduced, hints), BLOCK_R=bottleneck_block(reduced))


def kernel_grad_in_float32(geo: Geometry) -> bool:
    """Whether the caller gives `_dk_kernel` a float32 kernel gradient to
    write, and casts it to the kernel's dtype after: when the group's
    channels take more than one block, whose partial sums the kernel adds in
    memory. Written in bfloat16, each block's partial sum would be rounded,
    and partial sums that cancel lose the result's accuracy (a 4% error was
    seen in a test); in float32 the gradient is rounded once."""
    return geo.channel_blocks > 1


def check_size(implementation: str, *shapes: tuple[int, ...]) -> None:
    """The kernels index pixels with 32-bit integers: refuse larger tensors.
    (A list, not a generator, for math.prod: torch.compile traces this on
    PyTorch, and a generator argument broke its graph.)"""
    for shape in shapes:
        if math.prod([int(n) for n in shape]) >= 2**31:
            raise ValueError(
                f"The {implementation!r} involution implementation indexes pixels with 32-bit integers; "
                f"split the batch. Received: a tensor of shape {tuple(int(n) for n in shape)}")
