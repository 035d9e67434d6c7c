"""Shape and padding arithmetic shared by every aggregation implementation.

All implementations compute the same function:

    out[b, ho, wo, c] = sum_{i, j} kernel[b, ho, wo, g(c) * K * K + i * K + j]
                                   * x[b, ho * s + i - pad_top, wo * s + j - pad_left, c]

with g(c) = c // (C // G) and zero outside the input. The padding is the one of
`keras.layers.Conv2D(padding="same", strides=s)`: the total padding along an axis
is `max((out - 1) * s + K - size, 0)`, split with the odd pixel at the end.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from keras import backend, ops


class Generation(NamedTuple):
    """The generation branch's weights, as backend tensors, for an
    implementation that generates the kernel inside its own kernel."""

    reduce_kernel: Any  # (C, R)
    reduce_bias: Any  # (R,)
    gamma: Any  # (R,)
    beta: Any  # (R,)
    moving_mean: Any  # (R,)
    moving_variance: Any  # (R,)
    epsilon: float
    span_kernel: Any  # (R, G*K*K)
    span_bias: Any  # (G*K*K,)


def output_size(size, stride: int):
    """ceil(size / stride) for a Python int or a backend scalar tensor."""
    return (size + stride - 1) // stride


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int, int]:
    """Return (pad_before, pad_after, out) for one spatial axis of static size.

    `pad_after` is negative when the strided windows stop short of the input's
    end (e.g. K = 1, s = 2 on an even size): the implementations then crop.
    """
    out = output_size(size, stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    before = total // 2
    after = (out - 1) * stride + kernel_size - size - before
    return before, after, out


def folded_generation(gen: Generation) -> tuple:
    """(W_reduce', b_reduce', W_span, b_span) in float32 for an implementation
    that generates on chip: batch normalisation's inference affine map (moving
    statistics) folded into the reduce 1x1, so that the bottleneck is
    relu(pooled @ W_reduce' + b_reduce'). Backend tensors, differentiable."""
    def f32(t):
        return ops.cast(t, "float32")

    scale = f32(gen.gamma) * ops.rsqrt(f32(gen.moving_variance) + gen.epsilon)  # (R,)
    w_reduce = f32(gen.reduce_kernel) * scale  # (C, R)
    b_reduce = (f32(gen.reduce_bias) - f32(gen.moving_mean)) * scale + f32(gen.beta)  # (R,)
    return w_reduce, b_reduce, f32(gen.span_kernel), f32(gen.span_bias)


def generated_kernel(pooled, w_reduce, b_reduce, w_span, b_span, dtype):
    """The kernel (B, Ho, Wo, G*K*K) from folded weights, in memory: what a
    generating implementation computes on chip, for its unfused paths."""
    hidden = ops.relu(ops.matmul(ops.cast(pooled, "float32"), w_reduce) + b_reduce)  # (B, Ho, Wo, R)
    return ops.cast(ops.matmul(hidden, w_span) + b_span, dtype)  # (B, Ho, Wo, G*K*K)


# The environment variables that build the fused kernels another way, for a
# GPU session to time against the default from one commit (`rows_per_step`;
# `triton_kernels.tile_width`); `aggregation.kernel_switches` reads both.
UNROLL_WINDOW = "INVOLUTION_UNROLL_WINDOW"
TILE_WIDTH = "INVOLUTION_TILE_WIDTH"


@functools.cache
def switch(variable: str) -> str:
    """A kernel switch's value in the environment ("0" when unset), read
    once per process, like KERAS_BACKEND: every launch asks (PyTorch's for
    each call), and a run records the value its kernels were built with
    (`aggregation.kernel_switches`), which a later change to the
    environment must not make untrue. A test that sets a switch clears
    this cache (`switch.cache_clear()`)."""
    return os.environ.get(variable, "0")


def unroll_window() -> bool:
    """Whether INVOLUTION_UNROLL_WINDOW=1 asks the fused kernels to unroll
    every tap of the window (see `rows_per_step`); 0 or unset: no. Any
    other value raises ValueError, one line."""
    value = switch(UNROLL_WINDOW)
    if value not in ("0", "1"):
        raise ValueError(f"{UNROLL_WINDOW} sets how the fused kernels loop over the window: 0 (rows a loop, "
                         f"the default) or 1 (every tap unrolled). Received: {UNROLL_WINDOW}={value!r}")
    return value == "1"


def rows_per_step(kernel_size: int) -> int:
    """How many of the window's K rows one step of a fused kernel's row loop
    unrolls: 1 (the default since version v5: rows a loop, each row's K taps
    unrolled) or K with INVOLUTION_UNROLL_WINDOW=1 (all K*K taps unrolled, as
    up to v4), so that a GPU session can time both from one commit
    (docs/PERF.md, section 13). A kernel argument: the two compile apart."""
    return kernel_size if unroll_window() else 1


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def bottleneck_block(reduced: int) -> int:
    """The generating kernels' block over the bottleneck's R channels: a
    power of two of at least 16 (a `dot` needs every dimension of at least
    16 on a GPU), in the Triton and Pallas kernels alike."""
    return max(16, _next_power_of_2(reduced))


def input_channel_block(channels: int) -> int:
    """Input channels one step of the fused kernels' reduce matmul reads:
    up to 32 (one 128-byte line of a float32 pixel), no longer 64. With 64,
    Triton 3.6 (the GPU machine's) spilled up to 2 KB a thread in the
    inference kernel at the 14 px RedNet stage (every tile) and at 28 px (32
    pixels a warp); with 32, 56 B at most, and Triton 3.9 spills less too
    (docs/PERF.md, section 18)."""
    return max(16, min(32, _next_power_of_2(channels)))


@dataclass(frozen=True)
class Geometry:
    """One fused-kernel call: shapes, padding and tiles, shared by the Triton
    and Pallas kernels (`Geometry.of`).

    A program covers `block_p` flat pixels x `block_c` channels of one group;
    a group's channels take `channel_blocks` programs. `block_c` is the group's
    channels up to 64 (each generated weight is then loaded once per pixel),
    `block_p` about 4K elements a tile; on CUDA Triton autotunes `block_p`.
    """

    batch: int
    height: int
    width: int
    channels: int
    kernel_size: int
    stride: int
    groups: int
    out_height: int
    out_width: int
    pad_top: int
    pad_left: int
    group_channels: int
    block_p: int
    block_c: int
    channel_blocks: int

    @staticmethod
    @functools.cache
    def of(shape: tuple[int, int, int, int], kernel_size: int, stride: int, groups: int) -> Geometry:
        """The geometry of an input of static shape (B, H, W, C)."""
        batch, height, width, channels = (int(n) for n in shape)
        top, _, out_height = same_padding(height, kernel_size, stride)
        left, _, out_width = same_padding(width, kernel_size, stride)
        group_channels = channels // groups
        block_c = min(_next_power_of_2(group_channels), 64)
        block_p = max(16, min(128, 4096 // block_c))
        return Geometry(batch, height, width, channels, kernel_size, stride, groups, out_height, out_width, top,
                        left, group_channels, block_p, block_c, -(-group_channels // block_c))

    @property
    def in_pixels(self) -> int:
        return self.batch * self.height * self.width

    @property
    def phase_pixels(self) -> int:
        """Input pixels of one stride phase (h % s, w % s), the largest
        phase's count: B * ceil(H/s) * ceil(W/s). The Triton input-gradient
        kernels run one tile grid of this many pixels per phase, s^2 phases."""
        return self.batch * -(-self.height // self.stride) * -(-self.width // self.stride)

    @property
    def out_pixels(self) -> int:
        return self.batch * self.out_height * self.out_width

    @property
    def generated_channels(self) -> int:
        """Channels of the generated kernel: G * K * K."""
        return self.groups * self.kernel_size * self.kernel_size


def _pad(x, top, bottom, left, right):
    """Zero-pad H and W with the backend's own op.

    `keras.ops.pad` instantiates a Keras Operation on every eager call; the
    global name counter it bumps is a guard of torch.compile, which then
    recompiles on every call.
    """
    name = backend.backend()
    if name == "torch":
        import torch.nn.functional as F

        return F.pad(x, (0, 0, left, right, top, bottom))
    if name == "jax":
        import jax.numpy as jnp

        return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    if name == "tensorflow":
        import tensorflow as tf

        return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    return ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])


def padded_input(x, kernel_size: int, stride: int):
    """Pad (or crop) x so that window (ho, wo) starts at row ho * s, column wo * s.

    Works on static and dynamic spatial sizes (TensorFlow graphs built from
    `keras.Input((None, None, C))` have symbolic H and W).

    Returns (xp, ho, wo): xp of shape (B, (Ho - 1) * s + K, (Wo - 1) * s + K, C).
    """
    shape = ops.shape(x)
    h, w = shape[1], shape[2]
    if isinstance(h, int) and isinstance(w, int):
        top, bottom, ho = same_padding(h, kernel_size, stride)
        left, right, wo = same_padding(w, kernel_size, stride)
        xp = _pad(x, top, max(bottom, 0), left, max(right, 0))
        if bottom < 0 or right < 0:
            # The strided windows stop short of the input's end: crop the rows
            # and columns that no window reads.
            xp = xp[:, : (ho - 1) * stride + kernel_size, : (wo - 1) * stride + kernel_size, :]
        return xp, ho, wo
    ho, wo = output_size(h, stride), output_size(w, stride)
    span_h = (ho - 1) * stride + kernel_size
    span_w = (wo - 1) * stride + kernel_size
    top = ops.maximum(span_h - h, 0) // 2
    left = ops.maximum(span_w - w, 0) // 2
    bottom = ops.maximum(span_h - h - top, 0)
    right = ops.maximum(span_w - w - left, 0)
    xp = _pad(x, top, bottom, left, right)
    return xp[:, :span_h, :span_w, :], ho, wo


def windows(x, kernel_size: int, stride: int):
    """Pad x and return (window, ho, wo): `window(i, j)` is the (B, Ho, Wo, C)
    input that kernel offset (i, j) reads (see `padded_windows`)."""
    xp, ho, wo = padded_input(x, kernel_size, stride)  # (B, Hp, Wp, C)
    return padded_windows(xp, ho, wo, kernel_size, stride), ho, wo


def padded_windows(xp, ho, wo, kernel_size: int, stride: int, groups: int | None = None):
    """`window(i, j)`: the (B, Ho, Wo, C) rows i + s * ho and columns
    j + s * wo of `xp`, the output of `padded_input`; with `groups`,
    (B, Ho, Wo, G, C/G), the channels split into their groups once for all
    K*K windows.

    With a stride, each window is a slice with a step. TensorFlow's kernel for
    those is slow: its shift-sum at stride 2 took twice its time at stride 1
    though it computes a quarter of the outputs (docs/PERF.md, section 25).
    There the padded input is split once into its s * s stride phases,
    (s, s, B, Hp / s, Wp / s, C), and every window is a plain slice of one
    phase. XLA (JAX) fuses a stepped slice into its consumer and PyTorch takes
    it as a view, so they slice directly: the split would cost them a copy.

    The groups are split once, not in each window, because every `keras.ops`
    call is Python that torch.compile traces anew in each case: K*K reshapes
    were most of the time Dynamo took to trace the layer (docs/PERF.md,
    section 29).
    """
    channels = xp.shape[-1]
    lanes = (channels,) if groups is None else (groups, channels // groups)  # what a pixel holds
    if stride == 1 or backend.backend() != "tensorflow":
        if groups is not None:
            shape = ops.shape(xp)
            xp = ops.reshape(xp, (-1, shape[1], shape[2], *lanes))  # (B, Hp, Wp, G, C/G)

        def window(i: int, j: int):
            return xp[:, i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride]

        return window
    s = stride
    # Hp = (Ho - 1) * s + K rows, padded to a whole number of phases, Hb = Ho + (K - 1) // s each;
    # the extra rows and columns (fewer than s) are read by no window.
    extra = s * (1 + (kernel_size - 1) // s) - kernel_size
    if extra:
        xp = _pad(xp, 0, extra, 0, extra)
    hb, wb = ho + (kernel_size - 1) // s, wo + (kernel_size - 1) // s
    phases = ops.transpose(
        ops.reshape(xp, (-1, hb, s, wb, s, *lanes)), (2, 4, 0, 1, 3, *range(5, 5 + len(lanes)))
    )  # (s, s, B, Hb, Wb, *lanes): phases[p, q, b, u, v] = xp[b, u * s + p, v * s + q]

    def phase_window(i: int, j: int):
        return phases[i % s, j % s, :, i // s : i // s + ho, j // s : j // s + wo]

    return phase_window
