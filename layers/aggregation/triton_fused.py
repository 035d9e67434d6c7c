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

from layers.aggregation._common import Generation, Geometry, folded_generation
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

__all__ = ["Generation", "aggregate", "aggregate_hidden", "involution"]


def _fused_kernel(x_ptr, xg_ptr, wr_ptr, br_ptr, ws_ptr, bs_ptr, o_ptr,
               n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, R,
               K: tl.constexpr, STRIDE: tl.constexpr, ROWS: tl.constexpr, DOT_PRECISION: tl.constexpr,
               FROM_HIDDEN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
               BLOCK_CIN: tl.constexpr):
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

    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    if FROM_HIDDEN:
        # 1'. Training: the layer computed the bottleneck (batch statistics);
        # xg_ptr is that hidden tensor (n_pix, R).
        hidden = tl.load(xg_ptr + p.to(tl.int64)[:, None] * R + r[None, :],
                         mask=p_ok[:, None] & r_ok[None, :], other=0.0).to(tl.float32)  # (P, R)
    else:
        # 1. The bottleneck on chip: hidden = relu(pooled @ W_reduce' + b_reduce').
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
    for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see triton_kernels)
        for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
            i = i0 + di
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


def _dgen_kernel(x_ptr, dy_ptr, h_ptr, ws_ptr, dh_ptr, dws_ptr, dbs_ptr, n_pix, H, W, C, HO, WO, CG, PAD_T,
                 PAD_L, R, K: tl.constexpr, STRIDE: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    """Backward through the generated weights, which stay on chip. One
    program per pixel tile, over every group: per tap t of group g,
    d_w_t[p] = sum over g's channels of dy[p, c] * x[window_t(p), c] (as
    `triton`'s d-kernel), then at once
        d_hidden[p, :]  += d_w_t[p] * W_span[:, t]        (kept on chip)
        d_W_span[:, t]   = sum_p hidden[p, :] * d_w_t[p]  (this tile's share)
        d_b_span[t]      = sum_p d_w_t[p]                  (likewise)
    The tiles' shares are summed by the caller, so no atomics are needed."""
    pid_p = tl.program_id(0)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # flat output pixel
    p_ok = p < n_pix
    wo = p % WO
    ho = (p // WO) % HO
    b = p // (WO * HO)
    G = C // CG
    GKK = G * K * K
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    hp_mask = p_ok[:, None] & r_ok[None, :]
    hidden = tl.load(h_ptr + p.to(tl.int64)[:, None] * R + r[None, :], mask=hp_mask, other=0.0).to(tl.float32)
    d_hidden = tl.full((BLOCK_P, BLOCK_R), 0.0, tl.float32)
    dy_row = p.to(tl.int64) * C
    for g in range(G):
        for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see triton_kernels)
            for di in tl.static_range(ROWS):  # a step's rows and each row's taps: unrolled
                i = i0 + di
                hi = ho * STRIDE + i - PAD_T
                h_ok = p_ok & (hi >= 0) & (hi < H)
                for j in tl.static_range(K):
                    wi = wo * STRIDE + j - PAD_L
                    ok = h_ok & (wi >= 0) & (wi < W)
                    x_row = ((b * H + hi) * W + wi).to(tl.int64) * C
                    d_w = tl.full((BLOCK_P,), 0.0, tl.float32)
                    for c0 in range(0, CG, BLOCK_C):
                        cc = c0 + tl.arange(0, BLOCK_C)
                        c = g * CG + cc
                        c_ok = cc < CG
                        dyv = tl.load(dy_ptr + dy_row[:, None] + c[None, :],
                                      mask=p_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)  # (P, C)
                        xv = tl.load(x_ptr + x_row[:, None] + c[None, :],
                                     mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)  # (P, C)
                        d_w += tl.reduce(dyv * xv, 1, _add)  # (P,)
                    t = g * (K * K) + i * K + j
                    ws = tl.load(ws_ptr + r * GKK + t, mask=r_ok, other=0.0)  # (R,)
                    d_hidden += d_w[:, None] * ws[None, :]  # (P, R)
                    tl.store(dws_ptr + (pid_p * R + r).to(tl.int64) * GKK + t,
                             tl.reduce(hidden * d_w[:, None], 0, _add), mask=r_ok)  # (R,)
                    tl.store(dbs_ptr + pid_p.to(tl.int64) * GKK + t, tl.reduce(d_w, 0, _add))
    tl.store(dh_ptr + p.to(tl.int64)[:, None] * R + r[None, :], d_hidden.to(dh_ptr.dtype.element_ty), mask=hp_mask)


def _dx_gen_kernel(h_ptr, ws_ptr, bs_ptr, dy_ptr, dx_ptr, n_pix, H, W, C, HO, WO, CG, N_CBLK, PAD_T, PAD_L, R,
                   K: tl.constexpr, STRIDE: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr,
                   BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    """d_x as `triton`'s d-x kernel, each weight generated again from the
    hidden tensor of the output pixel that reads this input pixel."""
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
    GKK = G * K * K
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for i0 in range(0, K, ROWS):  # the rows: a loop of ROWS-row steps (see triton_kernels)
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
                t = g * (K * K) + i * K + j
                hq = tl.load(h_ptr + q[:, None] * R + r[None, :], mask=ok[:, None] & r_ok[None, :],
                             other=0.0).to(tl.float32)  # (P, R)
                ws = tl.load(ws_ptr + r * GKK + t, mask=r_ok, other=0.0)  # (R,)
                wgt = tl.reduce(hq * ws[None, :], 1, _add) + tl.load(bs_ptr + t)  # (P,)
                dyv = tl.load(dy_ptr + q[:, None] * C + c[None, :],
                              mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)  # (P, C)
                acc += wgt[:, None] * dyv
    tl.store(dx_ptr + p.to(tl.int64)[:, None] * C + c[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


@functools.cache
def _compiled(interpret: bool):
    """(forward, backward through the generation, d_x): interpreted, or
    compiled for CUDA. The backward through the generation is not autotuned:
    its per-tile partial sums are sized by BLOCK_P."""
    kernels = (_fused_kernel, _dgen_kernel, _dx_gen_kernel)
    if interpret:
        return tuple(InterpretedFunction(kernel) for kernel in kernels)
    forward, dgen, dx = (triton.jit(kernel, do_not_specialize=_shape_args(kernel)) for kernel in kernels)
    if not _autotune():
        return forward, dgen, dx
    tune = triton.autotune(configs=_CONFIGS, key=_KEY + ["R", "FROM_HIDDEN"], do_bench=_tuning_bench)
    return tune(forward), dgen, triton.autotune(configs=_CONFIGS, key=_KEY + ["R"], do_bench=_tuning_bench)(dx)


def _block_r(reduced: int) -> int:
    return max(16, triton.next_power_of_2(reduced))  # tl.dot needs every dimension of at least 16 on a GPU


def _check_size(x, other) -> None:
    if max(x.numel(), other.numel()) >= 2**31:
        raise ValueError(
            "The 'triton_fused' involution implementation indexes pixels with 32-bit integers; "
            f"split the batch. Received: input of shape {tuple(x.shape)}"
        )


def _forward(x, xg, w_reduce, b_reduce, w_span, b_span, geo: Geometry, reduced: int, from_hidden: bool):
    interpret = x.device.type != "cuda"
    out = torch.empty((geo.batch, geo.out_height, geo.out_width, geo.channels), device=x.device, dtype=x.dtype)
    precision = "tf32" if (not interpret and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    _launch(_compiled(interpret)[0], interpret, geo, geo.out_pixels, geo.groups * geo.channel_blocks,
            x_ptr=x, xg_ptr=xg, wr_ptr=w_reduce, br_ptr=b_reduce, ws_ptr=w_span, bs_ptr=b_span, o_ptr=out,
            n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, R=reduced, DOT_PRECISION=precision,
            FROM_HIDDEN=from_hidden, BLOCK_R=_block_r(reduced),
            BLOCK_CIN=max(16, min(64, triton.next_power_of_2(geo.channels))), **_sizes(geo))
    return out


class HiddenAggregation(torch.autograd.Function):
    """The aggregation generating its weights from the stored bottleneck:
    saves x and hidden (R values a pixel), never the kernel (G*K*K)."""

    @staticmethod
    def forward(ctx, x, hidden, w_span, b_span, kernel_size, stride, groups):
        _check_size(x, hidden)
        x, hidden = x.contiguous(), hidden.contiguous()
        w_span32, b_span32 = w_span.float().contiguous(), b_span.float().contiguous()
        geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
        reduced = hidden.shape[-1]
        out = _forward(x, hidden, w_span32, b_span32, w_span32, b_span32, geo, reduced, from_hidden=True)
        ctx.save_for_backward(x, hidden, w_span32, b_span32)
        ctx.geometry, ctx.dtypes = geo, (w_span.dtype, b_span.dtype)
        return out

    @staticmethod
    def backward(ctx, dy):
        x, hidden, w_span, b_span = ctx.saved_tensors
        geo = ctx.geometry
        dy = dy.contiguous()
        interpret = x.device.type != "cuda"
        _, dgen, dx_kernel = _compiled(interpret)
        reduced = hidden.shape[-1]
        block_r = _block_r(reduced)
        dx = d_hidden = d_w_span = d_b_span = None
        if any(ctx.needs_input_grad[1:4]):
            tiles = triton.cdiv(geo.out_pixels, geo.block_p)
            d_hidden = torch.empty_like(hidden)
            d_w_parts = torch.empty((tiles, reduced, geo.generated_channels), device=x.device, dtype=torch.float32)
            d_b_parts = torch.empty((tiles, geo.generated_channels), device=x.device, dtype=torch.float32)
            dgen[(tiles,)](
                x_ptr=x, dy_ptr=dy, h_ptr=hidden, ws_ptr=w_span, dh_ptr=d_hidden, dws_ptr=d_w_parts,
                dbs_ptr=d_b_parts, n_pix=geo.out_pixels, R=reduced, BLOCK_P=geo.block_p, BLOCK_C=geo.block_c,
                BLOCK_R=block_r, **_sizes(geo))
            d_w_span = d_w_parts.sum(0).to(ctx.dtypes[0])
            d_b_span = d_b_parts.sum(0).to(ctx.dtypes[1])
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x)
            _launch(dx_kernel, interpret, geo, geo.in_pixels, geo.groups * geo.channel_blocks,
                    h_ptr=hidden, ws_ptr=w_span, bs_ptr=b_span, dy_ptr=dy, dx_ptr=dx, n_pix=geo.in_pixels,
                    N_CBLK=geo.channel_blocks, R=reduced, BLOCK_R=block_r, **_sizes(geo))
        return dx, d_hidden, d_w_span, d_b_span, None, None, None


@torch.compiler.disable  # as `triton`'s aggregate: an opaque call, see triton_kernels
def aggregate_hidden(x, hidden, span_kernel, span_bias, kernel_size: int, stride: int, groups: int):
    """Training involution from the bottleneck: x (B, H, W, C), hidden
    (B, Ho, Wo, R), span kernel (R, G*K*K) and bias (G*K*K,) -> (B, Ho, Wo, C),
    the kernel generated on chip forward and backward."""
    return HiddenAggregation.apply(x, hidden, span_kernel, span_bias, kernel_size, stride, groups)


def _with_gradients(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
    """An inference call that needs gradients (a frozen layer fine-tuned
    through): the folded bottleneck with PyTorch ops, then the generating
    aggregation, so that autograd sees every step."""
    w_reduce, b_reduce, w_span, b_span = folded_generation(gen)
    hidden = torch.relu(pooled.float() @ w_reduce + b_reduce).to(x.dtype)  # (B, Ho, Wo, R)
    return aggregate_hidden(x, hidden, w_span, b_span, kernel_size, stride, groups)


def _needs_grad(x, pooled, gen: Generation) -> bool:
    tensors = [x, pooled, *(t for t in gen if isinstance(t, torch.Tensor))]
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


@torch.compiler.disable  # as `triton`'s aggregate: an opaque call, see triton_kernels
def involution(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
    """Inference involution: x (B, H, W, C), pooled (B, Ho, Wo, C) -> (B, Ho, Wo, C)."""
    if _needs_grad(x, pooled, gen):
        return _with_gradients(x, pooled, gen, kernel_size, stride, groups)
    _check_size(x, pooled)
    w_reduce, b_reduce, w_span, b_span = (t.contiguous() for t in folded_generation(gen))
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    return _forward(x.contiguous(), pooled.contiguous(), w_reduce, b_reduce, w_span, b_span, geo,
                    w_reduce.shape[1], from_hidden=False)
