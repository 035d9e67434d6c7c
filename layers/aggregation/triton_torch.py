"""`triton` and `triton_fused` on PyTorch: the Triton kernels of
`triton_kernels`, launched by Triton itself, with their autograd Functions.

- `aggregate` (`triton`, and `triton_fused`'s training with
  `return_kernel=True`): the aggregation of a generated kernel, forward and
  its two backward kernels.
- `involution` (`triton_fused`, inference): the whole layer in one kernel,
  the generated kernel never in memory. An inference call that needs
  gradients (a frozen layer being fine-tuned through) runs the folded
  bottleneck with PyTorch ops, then `aggregate_hidden`, so that autograd
  sees every step.
- `aggregate_hidden` (`triton_fused`, training): the weights generated on
  chip from the stored bottleneck, forward and backward.

The fused kernel's reduce matmul runs on `tl.dot` with the precision PyTorch's
matmuls are set to: IEEE float32 unless `torch.backends.cuda.matmul.allow_tf32`
is on (the suite pins it per run, see bench/backends/torch.py). On CPU tensors
the kernels run in Triton's interpreter, in float32 NumPy.
"""

from __future__ import annotations

import torch

from layers.aggregation import triton_kernels as tk
from layers.aggregation._common import Generation, Geometry, folded_generation, input_channel_block

__all__ = ["Generation", "aggregate", "aggregate_hidden", "involution"]


def _kernels(x: torch.Tensor) -> tk.Kernels:
    return tk.compiled(x.device.type != "cuda")


class InvolutionAggregation(torch.autograd.Function):
    """Fused aggregation with its two backward kernels."""

    @staticmethod
    def forward(ctx, x, kernel, kernel_size, stride, groups):
        tk.check_size("triton", x.shape, kernel.shape)
        x = x.contiguous()
        kernel = kernel.contiguous()
        geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
        out = torch.empty((geo.batch, geo.out_height, geo.out_width, geo.channels), device=x.device, dtype=x.dtype)
        tk.launch(_kernels(x).forward, geo, geo.out_pixels, groups * geo.channel_blocks,
                  x_ptr=x, k_ptr=kernel, o_ptr=out, n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, **tk.sizes(geo))
        ctx.save_for_backward(x, kernel)
        ctx.geometry = geo
        return out

    @staticmethod
    def backward(ctx, dy):
        x, kernel = ctx.saved_tensors
        geo = ctx.geometry
        dy = dy.contiguous()
        kernels = _kernels(x)
        dx = dk = None
        if ctx.needs_input_grad[1]:
            dk = torch.empty_like(kernel, dtype=torch.float32 if tk.kernel_grad_in_float32(geo) else kernel.dtype)
            tk.launch(kernels.kernel_grad, geo, geo.out_pixels, geo.groups,
                      x_ptr=x, dy_ptr=dy, dk_ptr=dk, n_pix=geo.out_pixels, **tk.sizes(geo))
            dk = dk.to(kernel.dtype)
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x)
            tk.launch(kernels.input_grad, geo, geo.phase_pixels, geo.groups * geo.channel_blocks,
                      k_ptr=kernel, dy_ptr=dy, dx_ptr=dx, n_pix=geo.phase_pixels, N_CBLK=geo.channel_blocks,
                      **tk.sizes(geo))
        return dx, dk, None, None, None


# Under torch.compile the kernels run as an opaque call between compiled
# graphs: Dynamo cannot trace Triton's interpreter (CPU tensors), and a graph
# break costs one launch gap, not a recompilation.
@torch.compiler.disable
def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C); torch tensors."""
    return InvolutionAggregation.apply(x, kernel, kernel_size, stride, groups)


def _fused(x, xg, w_reduce, b_reduce, w_span, b_span, geo: Geometry, reduced: int, from_hidden: bool):
    """The fused forward; xg is the pooled input, or the hidden tensor when
    `from_hidden` (w_reduce and b_reduce are then unused)."""
    interpret = x.device.type != "cuda"
    out = torch.empty((geo.batch, geo.out_height, geo.out_width, geo.channels), device=x.device, dtype=x.dtype)
    precision = "tf32" if (not interpret and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    tk.launch(_kernels(x).fused, geo, geo.out_pixels, geo.groups * geo.channel_blocks,
              x_ptr=x, xg_ptr=xg, wr_ptr=w_reduce, br_ptr=b_reduce, ws_ptr=w_span, bs_ptr=b_span, o_ptr=out,
              n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, DOT_PRECISION=precision, FROM_HIDDEN=from_hidden,
              BLOCK_CIN=input_channel_block(geo.channels), **tk.bottleneck(reduced),
              **tk.sizes(geo))
    return out


class HiddenAggregation(torch.autograd.Function):
    """The aggregation generating its weights from the stored bottleneck:
    saves x and hidden (R values a pixel), never the kernel (G*K*K)."""

    @staticmethod
    def forward(ctx, x, hidden, w_span, b_span, kernel_size, stride, groups):
        tk.check_size("triton_fused", x.shape, hidden.shape)
        x, hidden = x.contiguous(), hidden.contiguous()
        w_span32, b_span32 = w_span.float().contiguous(), b_span.float().contiguous()
        geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
        reduced = hidden.shape[-1]
        out = _fused(x, hidden, w_span32, b_span32, w_span32, b_span32, geo, reduced, from_hidden=True)
        ctx.save_for_backward(x, hidden, w_span32, b_span32)
        ctx.geometry, ctx.dtypes = geo, (w_span.dtype, b_span.dtype)
        return out

    @staticmethod
    def backward(ctx, dy):
        x, hidden, w_span, b_span = ctx.saved_tensors
        geo = ctx.geometry
        dy = dy.contiguous()
        kernels = _kernels(x)
        reduced = hidden.shape[-1]
        dx = d_hidden = d_w_span = d_b_span = None
        if any(ctx.needs_input_grad[1:4]):
            tiles = tk.tiles(kernels.generation_grad, geo, geo.out_pixels, geo.block_p)
            d_hidden = torch.empty_like(hidden)
            d_w_parts = torch.empty((tiles, reduced, geo.generated_channels), device=x.device, dtype=torch.float32)
            d_b_parts = torch.empty((tiles, geo.generated_channels), device=x.device, dtype=torch.float32)
            tk.launch(kernels.generation_grad, geo, geo.out_pixels, 1,
                      x_ptr=x, dy_ptr=dy, h_ptr=hidden, ws_ptr=w_span, dh_ptr=d_hidden, dws_ptr=d_w_parts,
                      dbs_ptr=d_b_parts, n_pix=geo.out_pixels, **tk.bottleneck(reduced), **tk.sizes(geo))
            d_w_span = d_w_parts.sum(0).to(ctx.dtypes[0])
            d_b_span = d_b_parts.sum(0).to(ctx.dtypes[1])
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x)
            tk.launch(kernels.input_grad_generated, geo, geo.phase_pixels, geo.groups * geo.channel_blocks,
                      h_ptr=hidden, ws_ptr=w_span, bs_ptr=b_span, dy_ptr=dy, dx_ptr=dx, n_pix=geo.phase_pixels,
                      N_CBLK=geo.channel_blocks, **tk.bottleneck(reduced), **tk.sizes(geo))
        return dx, d_hidden, d_w_span, d_b_span, None, None, None


@torch.compiler.disable  # as `aggregate`: an opaque call
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


@torch.compiler.disable  # as `aggregate`: an opaque call
def involution(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
    """Inference involution: x (B, H, W, C), pooled (B, Ho, Wo, C) -> (B, Ho, Wo, C)."""
    if _needs_grad(x, pooled, gen):
        return _with_gradients(x, pooled, gen, kernel_size, stride, groups)
    tk.check_size("triton_fused", x.shape, pooled.shape)
    w_reduce, b_reduce, w_span, b_span = (t.contiguous() for t in folded_generation(gen))
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    return _fused(x.contiguous(), pooled.contiguous(), w_reduce, b_reduce, w_span, b_span, geo,
                  w_reduce.shape[1], from_hidden=False)
