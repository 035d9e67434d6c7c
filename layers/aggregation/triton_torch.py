"""`triton` and `triton_fused` on PyTorch: the Triton kernels of
`triton_kernels`, launched by Triton itself, with their gradients.

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

Each launch is one function below (`LAUNCHES`), called in one of two ways:
- under `torch.compile`, as a PyTorch custom operator (`OPERATORS`,
  `torch.library.custom_op`, namespace `involution`, with a fake for its
  output's shape, dtype and strides, and the gradients registered as calls
  of the backward operators): Dynamo keeps each as one opaque node, so a
  compiled layer is one graph around the kernels and AOTAutograd takes the
  backward into the compiled backward. The `torch.compiler.disable`d autograd
  Functions they replace broke the graph inside the layer's profiler stage,
  where Dynamo cannot resume: the layer's own call then ran uncompiled in a
  `jit` case, and in training Dynamo traced into Triton's launcher
  (docs/PERF.md, section 30);
- eagerly, directly, in an autograd Function where gradients are needed: a
  custom operator's eager dispatch cost about 25 us more a launch on the
  2-core CPU, 20-250 us a layer step (section 30), host time that a GPU
  step's latency would pay.

The fused kernel's reduce matmul runs on `tl.dot` with the precision PyTorch's
matmuls are set to: IEEE float32 unless `torch.backends.cuda.matmul.allow_tf32`
is on (the suite pins it per run, see bench/backends/torch.py), read when the
kernel is launched. On CPU tensors the kernels run in Triton's interpreter, in
float32 NumPy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from layers.aggregation import triton_kernels as tk
from layers.aggregation._common import Generation, Geometry, folded_generation, input_channel_block, output_size

__all__ = ["LAUNCHES", "OPERATORS", "Generation", "aggregate", "aggregate_hidden", "involution"]

Tensor = torch.Tensor


def _kernels(x: Tensor) -> tk.Kernels:
    return tk.compiled(x.device.type != "cuda")


def _output_like(x: Tensor, stride: int) -> Tensor:
    """An empty contiguous (B, Ho, Wo, C) tensor like x: every forward's
    output, and its fake. (Every output is contiguous, and a fake must say so:
    `empty_like` keeps its argument's strides, and TorchInductor checks them.)"""
    batch, height, width, channels = x.shape
    return x.new_empty((batch, output_size(height, stride), output_size(width, stride), channels))


def _float32(*tensors: Tensor) -> list[Tensor]:
    return [t.float().contiguous() for t in tensors]


# The aggregation of a generated kernel: x (B, H, W, C), kernel (B, Ho, Wo, G*K*K).

def _aggregate(x: Tensor, kernel: Tensor, kernel_size: int, stride: int, groups: int) -> Tensor:
    x, kernel = x.contiguous(), kernel.contiguous()
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    out = _output_like(x, stride)  # (B, Ho, Wo, C)
    tk.launch(_kernels(x).forward, geo, geo.out_pixels, groups * geo.channel_blocks,
              x_ptr=x, k_ptr=kernel, o_ptr=out, n_pix=geo.out_pixels, N_CBLK=geo.channel_blocks, **tk.sizes(geo))
    return out


def _aggregate_kernel_grad(x: Tensor, kernel: Tensor, dy: Tensor, kernel_size: int, stride: int,
                           groups: int) -> Tensor:
    x, dy = x.contiguous(), dy.contiguous()
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    wide = tk.kernel_grad_in_float32(geo)
    dk = torch.empty(kernel.shape, device=x.device, dtype=torch.float32 if wide else kernel.dtype)
    tk.launch(_kernels(x).kernel_grad, geo, geo.out_pixels, groups,
              x_ptr=x, dy_ptr=dy, dk_ptr=dk, n_pix=geo.out_pixels, **tk.sizes(geo))
    return dk.to(kernel.dtype)  # (B, Ho, Wo, G*K*K)


def _aggregate_input_grad(x: Tensor, kernel: Tensor, dy: Tensor, kernel_size: int, stride: int,
                          groups: int) -> Tensor:
    kernel, dy = kernel.contiguous(), dy.contiguous()
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    dx = x.new_empty(x.shape)  # (B, H, W, C)
    tk.launch(_kernels(x).input_grad, geo, geo.phase_pixels, groups * geo.channel_blocks,
              k_ptr=kernel, dy_ptr=dy, dx_ptr=dx, n_pix=geo.phase_pixels, N_CBLK=geo.channel_blocks,
              **tk.sizes(geo))
    return dx


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


def _aggregate_hidden(x: Tensor, hidden: Tensor, w_span: Tensor, b_span: Tensor, kernel_size: int, stride: int,
                      groups: int) -> Tensor:
    w_span, b_span = _float32(w_span, b_span)
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    return _fused(x.contiguous(), hidden.contiguous(), w_span, b_span, w_span, b_span, geo, hidden.shape[-1],
                  from_hidden=True)


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


def _involution(x: Tensor, pooled: Tensor, w_reduce: Tensor, b_reduce: Tensor, w_span: Tensor, b_span: Tensor,
                kernel_size: int, stride: int, groups: int) -> Tensor:
    geo = Geometry.of(tuple(x.shape), kernel_size, stride, groups)
    w_reduce, b_reduce, w_span, b_span = (t.contiguous() for t in (w_reduce, b_reduce, w_span, b_span))
    return _fused(x.contiguous(), pooled.contiguous(), w_reduce, b_reduce, w_span, b_span, geo,
                  w_reduce.shape[1], from_hidden=False)


class Launches(NamedTuple):
    """Every launch, by name: the plain functions (`LAUNCHES`) or their custom
    operators (`OPERATORS`, `torch.ops.involution.<name>`)."""

    aggregate: object
    aggregate_kernel_grad: object
    aggregate_input_grad: object
    aggregate_hidden: object
    generation_grad: object
    generated_input_grad: object
    involution: object


LAUNCHES = Launches(_aggregate, _aggregate_kernel_grad, _aggregate_input_grad, _aggregate_hidden, _generation_grad,
                    _generated_input_grad, _involution)
OPERATORS = Launches(*(torch.library.custom_op(f"involution::{name}", fn, mutates_args=())
                       for name, fn in LAUNCHES._asdict().items()))


# The fakes: what each operator returns, without running it.

@OPERATORS.aggregate.register_fake
def _(x, kernel, kernel_size, stride, groups):
    return _output_like(x, stride)


@OPERATORS.aggregate_kernel_grad.register_fake
def _(x, kernel, dy, kernel_size, stride, groups):
    return kernel.new_empty(kernel.shape)


@OPERATORS.aggregate_input_grad.register_fake
def _(x, kernel, dy, kernel_size, stride, groups):
    return x.new_empty(x.shape)


@OPERATORS.aggregate_hidden.register_fake
def _(x, hidden, w_span, b_span, kernel_size, stride, groups):
    return _output_like(x, stride)


@OPERATORS.generation_grad.register_fake
def _(x, hidden, w_span, dy, kernel_size, stride, groups):
    generated = w_span.shape[-1]
    return (hidden.new_empty(hidden.shape), w_span.new_empty((hidden.shape[-1], generated)),
            w_span.new_empty((generated,)))


@OPERATORS.generated_input_grad.register_fake
def _(x, hidden, w_span, b_span, dy, kernel_size, stride, groups):
    return x.new_empty(x.shape)


@OPERATORS.involution.register_fake
def _(x, pooled, w_reduce, b_reduce, w_span, b_span, kernel_size, stride, groups):
    return _output_like(x, stride)


# The gradients, once for both ways of calling: `calls` is LAUNCHES or
# OPERATORS, `needs` which inputs want a gradient, `geometry` (K, stride, groups).

def _aggregate_grads(calls: Launches, needs, saved, geometry, dy) -> tuple:
    x, kernel = saved
    dx = calls.aggregate_input_grad(x, kernel, dy, *geometry) if needs[0] else None
    dk = calls.aggregate_kernel_grad(x, kernel, dy, *geometry) if needs[1] else None
    return dx, dk, None, None, None


def _aggregate_hidden_grads(calls: Launches, needs, saved, geometry, dy) -> tuple:
    x, hidden, w_span, b_span = saved
    dx = d_hidden = d_w_span = d_b_span = None
    if any(needs[1:4]):
        d_hidden, d_w_span, d_b_span = calls.generation_grad(x, hidden, w_span, dy, *geometry)
        d_b_span = d_b_span.to(b_span.dtype)
    if needs[0]:
        dx = calls.generated_input_grad(x, hidden, w_span, b_span, dy, *geometry)
    return dx, d_hidden, d_w_span, d_b_span, None, None, None


GRADIENTS = {"aggregate": _aggregate_grads, "aggregate_hidden": _aggregate_hidden_grads}


def _save_inputs(ctx, inputs, output):
    *tensors, kernel_size, stride, groups = inputs
    ctx.save_for_backward(*tensors)
    ctx.geometry = (kernel_size, stride, groups)


def _operator_backward(grads):
    def backward(ctx, dy):
        return grads(OPERATORS, ctx.needs_input_grad, ctx.saved_tensors, ctx.geometry, dy)

    return backward


for _name, _grads in GRADIENTS.items():
    getattr(OPERATORS, _name).register_autograd(_operator_backward(_grads), setup_context=_save_inputs)


class _Eager(torch.autograd.Function):
    """A differentiable launch called eagerly: `forward(name, *inputs)` runs
    LAUNCHES.<name>, and its backward the plain gradient launches."""

    @staticmethod
    def forward(ctx, name, *inputs):
        ctx.name = name
        _save_inputs(ctx, inputs, None)
        return getattr(LAUNCHES, name)(*inputs)

    @staticmethod
    def backward(ctx, dy):
        return None, *GRADIENTS[ctx.name](LAUNCHES, ctx.needs_input_grad[1:], ctx.saved_tensors, ctx.geometry, dy)


def _call(name: str, *inputs):
    """LAUNCHES.<name>(*inputs) as the call's context wants it: the custom
    operator under torch.compile; eagerly the function itself, in `_Eager`
    where a gradient may be asked of it."""
    if torch.compiler.is_compiling():
        return getattr(OPERATORS, name)(*inputs)
    if name in GRADIENTS and torch.is_grad_enabled() and any(
            isinstance(t, Tensor) and t.requires_grad for t in inputs):
        return _Eager.apply(name, *inputs)
    return getattr(LAUNCHES, name)(*inputs)


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C); torch tensors."""
    tk.check_size("triton", x.shape, kernel.shape)
    return _call("aggregate", x, kernel, kernel_size, stride, groups)


def aggregate_hidden(x, hidden, span_kernel, span_bias, kernel_size: int, stride: int, groups: int):
    """Training involution from the bottleneck: x (B, H, W, C), hidden
    (B, Ho, Wo, R), span kernel (R, G*K*K) and bias (G*K*K,) -> (B, Ho, Wo, C),
    the kernel generated on chip forward and backward; saves x and hidden (R
    values a pixel), never the kernel (G*K*K)."""
    tk.check_size("triton_fused", x.shape, hidden.shape)
    return _call("aggregate_hidden", x, hidden, span_kernel, span_bias, kernel_size, stride, groups)


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
    return _call("involution", x, pooled, *folded_generation(gen), kernel_size, stride, groups)
