"""`triton` and `triton_fused` on PyTorch: the Triton kernels of
`triton_kernels`, launched by Triton itself, as PyTorch custom operators
(`torch.library.custom_op`, namespace `involution`) with their gradients.

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

Why custom operators: `torch.compile` keeps each one as a single opaque node
of its graph (its shapes from the registered fake), forward and backward, so
a compiled layer is one graph around the kernels. The autograd Functions
behind `torch.compiler.disable` that they replace broke the graph inside the
layer's profiler stage, where Dynamo cannot resume: the layer's own call then
ran uncompiled in a `jit` case (the calls it makes compiled as graphs of
their own), and in training Dynamo traced into Triton's launcher (docs/PERF.md,
section 30).

The fused kernel's reduce matmul runs on `tl.dot` with the precision PyTorch's
matmuls are set to: IEEE float32 unless `torch.backends.cuda.matmul.allow_tf32`
is on (the suite pins it per run, see bench/backends/torch.py), read when the
operator runs. On CPU tensors the kernels run in Triton's interpreter, in
float32 NumPy.
"""

from __future__ import annotations

import torch

from layers.aggregation import triton_kernels as tk
from layers.aggregation._common import Generation, Geometry, folded_generation, input_channel_block, output_size

__all__ = ["Generation", "aggregate", "aggregate_hidden", "involution"]

Tensor = torch.Tensor


def _kernels(x: Tensor) -> tk.Kernels:
    return tk.compiled(x.device.type != "cuda")


def _output_like(x: Tensor, stride: int) -> Tensor:
    """An empty contiguous (B, Ho, Wo, C) tensor like x: every operator's
    output, and its fake. (Every output is contiguous, and a fake must say so:
    `empty_like` keeps its argument's strides, and TorchInductor checks them.)"""
    batch, height, width, channels = x.shape
    return x.new_empty((batch, output_size(height, stride), output_size(width, stride), channels))


# The aggregation of a generated kernel: x (B, H, W, C), kernel (B, Ho, Wo, G*K*K).

@torch.library.custom_op("involution::aggregate", mutates_args=())
def _aggregate(x: Tensor, kernel: Tensor, kernel_size: int, stride: int, groups: int) -> Tensor:
    x, kernel = x.contiguous(), kernel.contiguous()
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    out = _output_like(x, stride)  # (B, Ho, Wo, C)
    tk.launch(_kernels(x).forward, geo, geo.out_pixels, groups * geo.channel_blocks,
              x_ptr=x, k_ptr=kernel, o_ptr=out, n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, **tk.sizes(geo))
    return out


@torch.library.custom_op("involution::aggregate_kernel_grad", mutates_args=())
def _aggregate_kernel_grad(x: Tensor, kernel: Tensor, dy: Tensor, kernel_size: int, stride: int,
                           groups: int) -> Tensor:
    x, dy = x.contiguous(), dy.contiguous()
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    wide = tk.kernel_grad_in_float32(geo)
    dk = torch.empty(kernel.shape, device=x.device, dtype=torch.float32 if wide else kernel.dtype)
    tk.launch(_kernels(x).kernel_grad, geo, geo.out_pixels, groups,
              x_ptr=x, dy_ptr=dy, dk_ptr=dk, n_pix=geo.out_pixels, **tk.sizes(geo))
    return dk.to(kernel.dtype)  # (B, Ho, Wo, G*K*K)


@torch.library.custom_op("involution::aggregate_input_grad", mutates_args=())
def _aggregate_input_grad(x: Tensor, kernel: Tensor, dy: Tensor, kernel_size: int, stride: int,
                          groups: int) -> Tensor:
    kernel, dy = kernel.contiguous(), dy.contiguous()
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    dx = x.new_empty(x.shape)  # (B, H, W, C)
    tk.launch(_kernels(x).input_grad, geo, geo.phase_pixels, groups * geo.channel_blocks,
              k_ptr=kernel, dy_ptr=dy, dx_ptr=dx, n_pix=geo.phase_pixels, N_CBLK=geo.channel_blocks,
              **tk.sizes(geo))
    return dx


@_aggregate.register_fake
def _(x, kernel, kernel_size, stride, groups):
    return _output_like(x, stride)


@_aggregate_kernel_grad.register_fake
def _(x, kernel, dy, kernel_size, stride, groups):
    return kernel.new_empty(kernel.shape)


@_aggregate_input_grad.register_fake
def _(x, kernel, dy, kernel_size, stride, groups):
    return x.new_empty(x.shape)


def _save_inputs(ctx, inputs, output):
    *tensors, kernel_size, stride, groups = inputs
    ctx.save_for_backward(*tensors)
    ctx.geometry = (kernel_size, stride, groups)


def _aggregate_backward(ctx, dy):
    x, kernel = ctx.saved_tensors
    dx = _aggregate_input_grad(x, kernel, dy, *ctx.geometry) if ctx.needs_input_grad[0] else None
    dk = _aggregate_kernel_grad(x, kernel, dy, *ctx.geometry) if ctx.needs_input_grad[1] else None
    return dx, dk, None, None, None


_aggregate.register_autograd(_aggregate_backward, setup_context=_save_inputs)


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C); torch tensors."""
    tk.check_size("triton", x.shape, kernel.shape)
    return _aggregate(x, kernel, kernel_size, stride, groups)


# The generating kernels: the weights made on chip from the pooled input
# (xg: reduce 1x1 with batch norm folded, ReLU, span 1x1) or from the stored
# bottleneck (xg: the hidden tensor, span 1x1 only).

def _fused(x, xg, w_reduce, b_reduce, w_span, b_span, geo: Geometry, reduced: int, from_hidden: bool):
    """The fused forward; xg is the pooled input, or the hidden tensor when
    `from_hidden` (w_reduce and b_reduce are then unused)."""
    interpret = x.device.type != "cuda"
    out = _output_like(x, geo.stride)  # (B, Ho, Wo, C)
    precision = "tf32" if (not interpret and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    tk.launch(_kernels(x).fused, geo, geo.out_pixels, geo.groups * geo.channel_blocks,
              x_ptr=x, xg_ptr=xg, wr_ptr=w_reduce, br_ptr=b_reduce, ws_ptr=w_span, bs_ptr=b_span, o_ptr=out,
              n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, DOT_PRECISION=precision, FROM_HIDDEN=from_hidden,
              BLOCK_CIN=input_channel_block(geo.channels), **tk.bottleneck(reduced),
              **tk.sizes(geo))
    return out


def _float32(*tensors: Tensor) -> list[Tensor]:
    return [t.float().contiguous() for t in tensors]


@torch.library.custom_op("involution::aggregate_hidden", mutates_args=())
def _aggregate_hidden(x: Tensor, hidden: Tensor, w_span: Tensor, b_span: Tensor, kernel_size: int, stride: int,
                      groups: int) -> Tensor:
    w_span, b_span = _float32(w_span, b_span)
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    return _fused(x.contiguous(), hidden.contiguous(), w_span, b_span, w_span, b_span, geo, hidden.shape[-1],
                  from_hidden=True)


@torch.library.custom_op("involution::generation_grad", mutates_args=())
def _generation_grad(x: Tensor, hidden: Tensor, w_span: Tensor, dy: Tensor, kernel_size: int, stride: int,
                     groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of the hidden tensor, the span kernel and its bias, the
    weights made again from the hidden tensor."""
    x, hidden, dy = x.contiguous(), hidden.contiguous(), dy.contiguous()
    (w_span32,) = _float32(w_span)
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    kernel, reduced = _kernels(x).generation_grad, hidden.shape[-1]
    tiles = tk.tiles(kernel, geo, geo.out_pixels, geo.block_p)
    d_hidden = hidden.new_empty(hidden.shape)  # (B, Ho, Wo, R)
    d_w_parts = torch.empty((tiles, reduced, geo.generated_channels), device=x.device, dtype=torch.float32)
    d_b_parts = torch.empty((tiles, geo.generated_channels), device=x.device, dtype=torch.float32)
    tk.launch(kernel, geo, geo.out_pixels, 1,
              x_ptr=x, dy_ptr=dy, h_ptr=hidden, ws_ptr=w_span32, dh_ptr=d_hidden, dws_ptr=d_w_parts,
              dbs_ptr=d_b_parts, n_pix=geo.out_pixels, **tk.bottleneck(reduced), **tk.sizes(geo))
    return d_hidden, d_w_parts.sum(0).to(w_span.dtype), d_b_parts.sum(0).to(w_span.dtype)


@torch.library.custom_op("involution::generated_input_grad", mutates_args=())
def _generated_input_grad(x: Tensor, hidden: Tensor, w_span: Tensor, b_span: Tensor, dy: Tensor, kernel_size: int,
                          stride: int, groups: int) -> Tensor:
    hidden, dy = hidden.contiguous(), dy.contiguous()
    w_span, b_span = _float32(w_span, b_span)
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    dx = x.new_empty(x.shape)  # (B, H, W, C)
    tk.launch(_kernels(x).input_grad_generated, geo, geo.phase_pixels, geo.groups * geo.channel_blocks,
              h_ptr=hidden, ws_ptr=w_span, bs_ptr=b_span, dy_ptr=dy, dx_ptr=dx, n_pix=geo.phase_pixels,
              N_CBLK=geo.channel_blocks, **tk.bottleneck(hidden.shape[-1]), **tk.sizes(geo))
    return dx


@_aggregate_hidden.register_fake
def _(x, hidden, w_span, b_span, kernel_size, stride, groups):
    return _output_like(x, stride)


@_generation_grad.register_fake
def _(x, hidden, w_span, dy, kernel_size, stride, groups):
    generated = w_span.shape[-1]
    return (hidden.new_empty(hidden.shape), w_span.new_empty((hidden.shape[-1], generated)),
            w_span.new_empty((generated,)))


@_generated_input_grad.register_fake
def _(x, hidden, w_span, b_span, dy, kernel_size, stride, groups):
    return x.new_empty(x.shape)


def _aggregate_hidden_backward(ctx, dy):
    x, hidden, w_span, b_span = ctx.saved_tensors
    dx = d_hidden = d_w_span = d_b_span = None
    if any(ctx.needs_input_grad[1:4]):
        d_hidden, d_w_span, d_b_span = _generation_grad(x, hidden, w_span, dy, *ctx.geometry)
        d_b_span = d_b_span.to(b_span.dtype)
    if ctx.needs_input_grad[0]:
        dx = _generated_input_grad(x, hidden, w_span, b_span, dy, *ctx.geometry)
    return dx, d_hidden, d_w_span, d_b_span, None, None, None


_aggregate_hidden.register_autograd(_aggregate_hidden_backward, setup_context=_save_inputs)


def aggregate_hidden(x, hidden, span_kernel, span_bias, kernel_size: int, stride: int, groups: int):
    """Training involution from the bottleneck: x (B, H, W, C), hidden
    (B, Ho, Wo, R), span kernel (R, G*K*K) and bias (G*K*K,) -> (B, Ho, Wo, C),
    the kernel generated on chip forward and backward; saves x and hidden (R
    values a pixel), never the kernel (G*K*K)."""
    tk.check_size("triton_fused", x.shape, hidden.shape)
    return _aggregate_hidden(x, hidden, span_kernel, span_bias, kernel_size, stride, groups)


@torch.library.custom_op("involution::involution", mutates_args=())
def _involution(x: Tensor, pooled: Tensor, w_reduce: Tensor, b_reduce: Tensor, w_span: Tensor, b_span: Tensor,
                kernel_size: int, stride: int, groups: int) -> Tensor:
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    w_reduce, b_reduce, w_span, b_span = (t.contiguous() for t in (w_reduce, b_reduce, w_span, b_span))
    return _fused(x.contiguous(), pooled.contiguous(), w_reduce, b_reduce, w_span, b_span, geo,
                  w_reduce.shape[1], from_hidden=False)


@_involution.register_fake
def _(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
    return _output_like(x, stride)


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


def involution(x, pooled, gen: Generation, kernel_size: int, stride: int, groups: int):
    """Inference involution: x (B, H, W, C), pooled (B, Ho, Wo, C) -> (B, Ho, Wo, C)."""
    if _needs_grad(x, pooled, gen):
        return _with_gradients(x, pooled, gen, kernel_size, stride, groups)
    tk.check_size("triton_fused", x.shape, pooled.shape)
    return _involution(x, pooled, *folded_generation(gen), kernel_size, stride, groups)
