"""`triton_fused` (PyTorch): kernel generation and aggregation in one Triton kernel.

In inference the generated kernel (B, Ho, Wo, G*K*K) never reaches memory. One
program covers BLOCK_P output pixels and BLOCK_C channels of one group:

1. it reads the pixels' generation input (the input, average-pooled when
   stride > 1) and computes the bottleneck on chip,
   hidden = relu(pooled @ W_reduce' + b_reduce')              # (P, R)
   with batch normalisation folded into W_reduce' and b_reduce' (inference
   uses the moving statistics, so BN is an affine map per channel);
2. for each tap t of its group it makes the tap's weight from `hidden`,
   w_t = hidden @ W_span[:, g*K*K + t] + b_span[g*K*K + t]    # (P,)
   and accumulates w_t * x[window_t] as the `triton` kernel does.

The bottleneck is recomputed by each of a pixel tile's G * channel-block
programs: R*C multiply-adds per pixel and program, against reading and
writing a G*K*K-float kernel per pixel in the unfused layer (with C = 64,
R = 16, G = 4, K = 7: 4 * 1,024 on-chip MACs against 784 bytes of traffic).

Training and `return_kernel=True` take the layer's usual path with the
`triton` aggregation and its backward kernels (`aggregate` below is that
kernel). An inference call that needs gradients (a frozen layer being
fine-tuned through) runs the folded bottleneck with PyTorch ops, then the same
`aggregate`, so that autograd sees every step.

The reduce matmul runs on `tl.dot` with the precision PyTorch's matmuls are
set to: IEEE float32 unless `torch.backends.cuda.matmul.allow_tf32` is on
(the suite pins it per run, see bench/backends/torch.py). In Triton's
interpreter (CPU tensors) everything is float32 NumPy.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from layers.aggregation._common import Generation, Geometry, folded_generation, generated_kernel
from layers.aggregation.triton_kernels import (
    _CONFIGS,
    _KEY,
    _add,
    _autotune,
    _launch,
    _shape_args,
    _sizes,
    _tuning_bench,
    aggregate,
)

__all__ = ["Generation", "aggregate", "involution"]


def _fused_kernel(x_ptr, xg_ptr, wr_ptr, br_ptr, ws_ptr, bs_ptr, o_ptr,
               n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, R,
               K: tl.constexpr, STRIDE: tl.constexpr, DOT_PRECISION: tl.constexpr,
               BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_CIN: tl.constexpr):
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
    GKK = G * K * K

    # 1. The bottleneck on chip: hidden = relu(pooled @ W_reduce' + b_reduce').
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    xg_row = p.to(tl.int64) * C
    hidden = tl.full((BLOCK_P, BLOCK_R), 0.0, tl.float32)
    for c0 in range(0, C, BLOCK_CIN):
        ci = c0 + tl.arange(0, BLOCK_CIN)
        ci_ok = ci < C
        xg = tl.load(xg_ptr + xg_row[:, None] + ci[None, :],
                     mask=p_ok[:, None] & ci_ok[None, :], other=0.0).to(tl.float32)  # (P, CIN)
        wr = tl.load(wr_ptr + ci[:, None] * R + r[None, :],
                     mask=ci_ok[:, None] & r_ok[None, :], other=0.0)  # (CIN, R)
        hidden = tl.dot(xg, wr, hidden, input_precision=DOT_PRECISION)  # (P, R)
    hidden = tl.maximum(hidden + tl.load(br_ptr + r, mask=r_ok, other=0.0)[None, :], 0.0)

    # 2. Each tap's weight from the bottleneck, then the aggregation.
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for i in tl.static_range(K):
        hi = ho * STRIDE + i - PAD_T
        h_ok = p_ok & (hi >= 0) & (hi < H)
        for j in tl.static_range(K):
            wi = wo * STRIDE + j - PAD_L
            ok = h_ok & (wi >= 0) & (wi < W)
            t = g * (K * K) + i * K + j  # generated channel of this tap
            ws = tl.load(ws_ptr + r * GKK + t, mask=r_ok, other=0.0)  # (R,)
            wgt = tl.reduce(hidden * ws[None, :], 1, _add) + tl.load(bs_ptr + t)  # (P,)
            x_row = ((b * H + hi) * W + wi).to(tl.int64) * C
            xv = tl.load(x_ptr + x_row[:, None] + c[None, :],
                         mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)  # (P, C)
            acc += wgt[:, None] * xv
    o_row = p.to(tl.int64) * C
    tl.store(o_ptr + o_row[:, None] + c[None, :], acc.to(o_ptr.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


@functools.cache
def _compiled(interpret: bool):
    if interpret:
        return InterpretedFunction(_fused_kernel)
    kernel = triton.jit(_fused_kernel, do_not_specialize=_shape_args(_fused_kernel))
    if not _autotune():
        return kernel
    return triton.autotune(configs=_CONFIGS, key=_KEY + ["R"], do_bench=_tuning_bench)(kernel)


def _unfused(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
    """The same function with the kernel in memory and gradients for every input."""
    kernel = generated_kernel(pooled, *folded_generation(gen), x.dtype)  # (B, Ho, Wo, G*K*K)
    return aggregate(x, kernel, kernel_size, stride, groups)


def _needs_grad(x, pooled, gen: Generation) -> bool:
    tensors = [x, pooled, *(t for t in gen if isinstance(t, torch.Tensor))]
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


@torch.compiler.disable  # as `triton`'s aggregate: an opaque call, see triton_kernels
def involution(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
    """Inference involution: x (B, H, W, C), pooled (B, Ho, Wo, C) -> (B, Ho, Wo, C)."""
    if _needs_grad(x, pooled, gen):
        return _unfused(x, pooled, gen, kernel_size, stride, groups)
    if max(x.numel(), pooled.numel()) >= 2**31:
        raise ValueError(
            "The 'triton_fused' involution implementation indexes pixels with 32-bit integers; "
            f"split the batch. Received: input of shape {tuple(x.shape)}"
        )
    x = x.contiguous()
    pooled = pooled.contiguous()
    w_reduce, b_reduce, w_span, b_span = (t.contiguous() for t in folded_generation(gen))
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    reduced = w_reduce.shape[1]
    interpret = x.device.type != "cuda"
    out = torch.empty((geo.batch, geo.out_height, geo.out_width, geo.channels), device=x.device, dtype=x.dtype)
    # tl.dot needs every dimension of at least 16 on a GPU.
    block_r = max(16, triton.next_power_of_2(reduced))
    block_cin = max(16, min(64, triton.next_power_of_2(geo.channels)))
    precision = "tf32" if (not interpret and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    _launch(_compiled(interpret), interpret, geo, geo.out_pixels, groups * geo.channel_blocks,
            x_ptr=x, xg_ptr=pooled, wr_ptr=w_reduce, br_ptr=b_reduce, ws_ptr=w_span, bs_ptr=b_span, o_ptr=out,
            n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, R=reduced, DOT_PRECISION=precision,
            BLOCK_R=block_r, BLOCK_CIN=block_cin, **_sizes(geo))
    return out
