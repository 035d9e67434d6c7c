"""`triton` (PyTorch): fused involution aggregation, forward and backward.

One program covers a tile of BLOCK_P output pixels x BLOCK_C channels of one
group. Each generated weight is loaded once per pixel and broadcast over the
group's channels; the input is read through masks, so no padded copy is made
and no patch tensor exists. Accumulation is in float32 whatever the input
dtype.

Rows rolled, taps unrolled: every kernel loops over the window's K rows and
unrolls each row's K taps (ROWS = 1 row a loop step; INVOLUTION_UNROLL_WINDOW=1
gives ROWS = K, the whole window unrolled, for comparison on a GPU: see
`_common.rows_per_step`). With all K*K taps unrolled (up to version v4 in
docs/PERF.md), the compiler issued the whole window's loads ahead of the
arithmetic; compiled for sm_90 at K = 7, the forward kernel then held 170 to
255 registers a thread and spilled at 128-pixel tiles, leaving room for 8 to
12 of an SM's 64 warps, and each variant took seconds to compile, once per tile the
autotuner tries (`python -m bench.kernel_resources`, docs/PERF.md section 13).

Backward (a `torch.autograd.Function`):
- d_kernel[p, g, t] = sum over the group's channels of dy[p, c] * x[window_t(p), c]
- d_x: a gather over the output pixels whose window covers each input pixel,
  so no atomics are needed.

On CUDA tensors the kernels are compiled by Triton; on CPU tensors they run in
Triton's interpreter: correct, slow, meant for tests on machines without a
GPU. Both can happen in one process because the kernels use Triton builtins
only: library helpers such as `tl.zeros` or `tl.sum` are decorated when
`triton.language` is imported and then work in one mode only.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from layers.aggregation._common import Geometry, rows_per_step


def _add(a, b):
    return a + b


_add = triton.jit(_add)  # combine function of tl.reduce, usable in both modes


def _fwd_kernel(x_ptr, k_ptr, o_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L,
         K: tl.constexpr, STRIDE: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_gc = tl.program_id(1)
    g = pid_gc // N_CBLK
    cc = (pid_gc % N_CBLK) * BLOCK_C + tl.arange(0, BLOCK_C)  # channel within group
    c_ok = cc < CG
    c = g * CG + cc
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # flat output pixel (b, ho, wo)
    p_ok = p < n_pix
    wo = p % WO
    ho = (p // WO) % HO
    b = p // (WO * HO)
    G = C // CG
    k_row = k_ptr + p.to(tl.int64) * (G * K * K) + g * (K * K)
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see the module docstring)
        for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
            i = i0 + di
            hi = ho * STRIDE + i - PAD_T
            h_ok = p_ok & (hi >= 0) & (hi < H)
            for j in tl.static_range(K):
                wi = wo * STRIDE + j - PAD_L
                ok = h_ok & (wi >= 0) & (wi < W)
                wgt = tl.load(k_row + (i * K + j), mask=p_ok, other=0.0).to(tl.float32)  # (P,)
                x_row = ((b * H + hi) * W + wi).to(tl.int64) * C
                xv = tl.load(x_ptr + x_row[:, None] + c[None, :],
                             mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)  # (P, C)
                acc += wgt[:, None] * xv
    o_row = p.to(tl.int64) * C
    tl.store(o_ptr + o_row[:, None] + c[None, :], acc.to(o_ptr.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


def _dk_kernel(x_ptr, dy_ptr, dk_ptr, n_pix, H, W, C, HO, WO, CG, PAD_T, PAD_L, K: tl.constexpr,
               STRIDE: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    g = tl.program_id(1)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # flat output pixel
    p_ok = p < n_pix
    wo = p % WO
    ho = (p // WO) % HO
    b = p // (WO * HO)
    G = C // CG
    dy_row = p.to(tl.int64) * C
    dk_row = dk_ptr + p.to(tl.int64) * (G * K * K) + g * (K * K)
    for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see the module docstring)
        for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
            i = i0 + di
            hi = ho * STRIDE + i - PAD_T
            h_ok = p_ok & (hi >= 0) & (hi < H)
            for j in tl.static_range(K):
                wi = wo * STRIDE + j - PAD_L
                ok = h_ok & (wi >= 0) & (wi < W)
                x_row = ((b * H + hi) * W + wi).to(tl.int64) * C
                s = tl.full((BLOCK_P,), 0.0, tl.float32)
                for c0 in range(0, CG, BLOCK_C):
                    cc = c0 + tl.arange(0, BLOCK_C)
                    c = g * CG + cc
                    c_ok = cc < CG
                    dyv = tl.load(dy_ptr + dy_row[:, None] + c[None, :],
                                  mask=p_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
                    xv = tl.load(x_ptr + x_row[:, None] + c[None, :],
                                 mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
                    s += tl.reduce(dyv * xv, 1, _add)
                tl.store(dk_row + (i * K + j), s.to(dk_ptr.dtype.element_ty), mask=p_ok)


def _dx_kernel(k_ptr, dy_ptr, dx_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L,
               K: tl.constexpr, STRIDE: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_gc = tl.program_id(1)
    g = pid_gc // N_CBLK
    cc = (pid_gc % N_CBLK) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cc < CG
    c = g * CG + cc
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # flat input pixel (b, h, w)
    p_ok = p < n_pix
    w = p % W
    h = (p // W) % H
    b = p // (W * H)
    G = C // CG
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see the module docstring)
        for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
            i = i0 + di
            hn = h + PAD_T - i  # = ho * STRIDE when output row ho reads this pixel at tap row i
            ho = hn // STRIDE
            h_ok = p_ok & (hn >= 0) & (hn % STRIDE == 0) & (ho < HO)
            for j in tl.static_range(K):
                wn = w + PAD_L - j
                wo = wn // STRIDE
                ok = h_ok & (wn >= 0) & (wn % STRIDE == 0) & (wo < WO)
                q = ((b * HO + ho) * WO + wo).to(tl.int64)  # output pixel
                wgt = tl.load(k_ptr + q * (G * K * K) + g * (K * K) + (i * K + j), mask=ok, other=0.0).to(tl.float32)
                dyv = tl.load(dy_ptr + q[:, None] * C + c[None, :],
                              mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
                acc += wgt[:, None] * dyv
    tl.store(dx_ptr + p.to(tl.int64)[:, None] * C + c[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


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


_KERNELS = (_fwd_kernel, _dk_kernel, _dx_kernel)


@functools.cache
def _compiled(interpret: bool):
    """(forward, d_kernel, d_x): wrapped by Triton's interpreter, or compiled
    for CUDA (autotuned over _CONFIGS unless INVOLUTION_TRITON_AUTOTUNE=0)."""
    if interpret:
        return tuple(InterpretedFunction(kernel) for kernel in _KERNELS)
    kernels = [triton.jit(kernel, do_not_specialize=_shape_args(kernel)) for kernel in _KERNELS]
    if not _autotune():
        return tuple(kernels)
    tune = triton.autotune(configs=_CONFIGS, key=_KEY, do_bench=_tuning_bench)
    return tuple(tune(kernel) for kernel in kernels)


def _launch(kernel, interpret: bool, geo: Geometry, pixels: int, channel_blocks: int, **arguments):
    """Launch over (pixel blocks, channel_blocks) with named arguments:
    BLOCK_P from the autotuner when it runs, else the geometry's."""
    if interpret or not _autotune():
        kernel[(triton.cdiv(pixels, geo.block_p), channel_blocks)](BLOCK_P=geo.block_p, BLOCK_C=geo.block_c,
                                                                   **arguments)
    else:
        def grid(meta):
            return (triton.cdiv(pixels, meta["BLOCK_P"]), channel_blocks)

        kernel[grid](BLOCK_C=geo.block_c, **arguments)


def _sizes(geo: Geometry) -> dict:
    """The integer arguments every kernel takes, by name."""
    return dict(H=geo.height, W=geo.width, C=geo.channels, HO=geo.out_height, WO=geo.out_width,
                CG=geo.group_channels, PAD_T=geo.pad_top, PAD_L=geo.pad_left, K=geo.kernel_size,
                STRIDE=geo.stride, ROWS=rows_per_step(geo.kernel_size))


class InvolutionAggregation(torch.autograd.Function):
    """Fused aggregation with its two backward kernels."""

    @staticmethod
    def forward(ctx, x, kernel, kernel_size, stride, groups):
        if max(x.numel(), kernel.numel()) >= 2**31:
            raise ValueError(
                "The 'triton' involution implementation indexes pixels with 32-bit "
                "integers; split the batch. Received: input of shape "
                f"{tuple(x.shape)} and kernel of shape {tuple(kernel.shape)}"
            )
        x = x.contiguous()
        kernel = kernel.contiguous()
        geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
        interpret = x.device.type != "cuda"
        fwd, _, _ = _compiled(interpret)
        out = torch.empty((geo.batch, geo.out_height, geo.out_width, geo.channels), device=x.device, dtype=x.dtype)
        _launch(fwd, interpret, geo, geo.out_pixels, groups * geo.channel_blocks,
                x_ptr=x, k_ptr=kernel, o_ptr=out, n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, **_sizes(geo))
        ctx.save_for_backward(x, kernel)
        ctx.geometry = geo
        return out

    @staticmethod
    def backward(ctx, dy):
        x, kernel = ctx.saved_tensors
        geo = ctx.geometry
        dy = dy.contiguous()
        interpret = x.device.type != "cuda"
        _, dk_kernel, dx_kernel = _compiled(interpret)
        dx = dk = None
        if ctx.needs_input_grad[1]:
            dk = torch.empty_like(kernel)
            _launch(dk_kernel, interpret, geo, geo.out_pixels, geo.groups,
                    x_ptr=x, dy_ptr=dy, dk_ptr=dk, n_pix=geo.out_pixels, **_sizes(geo))
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x)
            _launch(dx_kernel, interpret, geo, geo.in_pixels, geo.groups * geo.channel_blocks,
                    k_ptr=kernel, dy_ptr=dy, dx_ptr=dx, n_pix=geo.in_pixels, N_CBLK=geo.channel_blocks,
                    **_sizes(geo))
        return dx, dk, None, None, None


# Under torch.compile the kernels run as an opaque call between compiled
# graphs: Dynamo cannot trace Triton's interpreter (CPU tensors), and a graph
# break costs one launch gap, not a recompilation.
@torch.compiler.disable
def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C); torch tensors."""
    return InvolutionAggregation.apply(x, kernel, kernel_size, stride, groups)
