"""Analytic parameters, multiply-accumulates and bytes of the compared layers.

These are the reference figures of the suite: measured counters (TensorFlow's
profiler, XLA's cost analysis, PyTorch's FlopCounterMode) skip operations or
whole libraries, so they are recorded beside these, labelled, never instead.

Conventions:
- MACs count multiply-accumulates of the forward pass; FLOPs = 2 * MACs.
  Training (forward and backward to inputs and weights) costs 3x the forward
  FLOPs: each product of the forward pass is needed once more for the input
  gradient and once for the weight gradient.
- Involution counts both of its parts: kernel generation (two 1x1
  convolutions) and aggregation (K*K multiply-adds per output element).
  Bias additions, batch norm, ReLU and pooling are not counted (as in the
  papers' MAC figures).
- `bytes_min` is what an ideal implementation must move through memory:
  inference reads the input and the weights and writes the output once;
  training also reads the output gradient, the input and the weights again
  and writes the input and weight gradients (3x input + 3x weights + 2x output).
  For involution the ideal implementation generates its kernels on chip;
  `bytes_aggregation` is what an aggregation that reads them from memory
  moves: input + generated kernel + output; in training its backward also
  reads the input, the kernel and the output gradient and writes the input
  and kernel gradients (3x input + 3x kernel + 2x output in all).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras

from layers import aggregation

ACTIVATION_BYTES = {"float32": 4, "mixed_bfloat16": 2, "mixed_float16": 2}
WEIGHT_BYTES = 4  # variables stay float32 under Keras' mixed policies


def out_size(size: int, stride: int) -> int:
    return -(-size // stride)


def reduced_channels(channels: int, reduction_ratio: int) -> int:
    return max(1, channels // reduction_ratio)


def involution_params(channels: int, kernel_size: int, groups: int, reduction_ratio: int) -> tuple[int, int]:
    """(all, trainable) parameters: reduce conv + bias, batch norm (gamma,
    beta trainable; moving mean and variance not), span conv + bias."""
    cr = reduced_channels(channels, reduction_ratio)
    span = kernel_size * kernel_size * groups
    trainable = channels * cr + cr + 2 * cr + cr * span + span
    return trainable + 2 * cr, trainable


def involution_macs(batch, height, width, channels, kernel_size, stride, groups, reduction_ratio) -> dict[str, int]:
    pixels = batch * out_size(height, stride) * out_size(width, stride)
    cr = reduced_channels(channels, reduction_ratio)
    return {
        "generation": pixels * (channels * cr + cr * kernel_size * kernel_size * groups),
        "aggregation": pixels * channels * kernel_size * kernel_size,
    }


@dataclass(frozen=True)
class Figures:
    """Analytic figures of one layer case (bytes in the case's dtype)."""

    params: int
    trainable_params: int
    macs: int
    flops: int
    bytes_min: int
    bytes_aggregation: int
    largest_intermediate_bytes: int
    macs_generation: int = 0
    macs_aggregation: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def layer_figures(
    layer: str,
    implementation: str,
    *,
    batch: int,
    resolution: int | tuple[int, int],
    channels: int,
    kernel_size: int,
    stride: int,
    groups: int = 1,
    reduction_ratio: int = 4,
    dtype: str = "float32",
    mode: str = "inference",
) -> Figures:
    """Figures of a registry layer ("involution", "conv2d", "depthwise")."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    ho, wo = out_size(h, stride), out_size(w, stride)
    act = ACTIVATION_BYTES[dtype]
    k2 = kernel_size * kernel_size
    x_bytes = batch * h * w * channels * act
    y_bytes = batch * ho * wo * channels * act
    kernel_bytes = 0
    parts = {}
    if layer == "involution":
        params, trainable = involution_params(channels, kernel_size, groups, reduction_ratio)
        parts = involution_macs(batch, h, w, channels, kernel_size, stride, groups, reduction_ratio)
        macs = parts["generation"] + parts["aggregation"]
        kernel_bytes = batch * ho * wo * k2 * groups * act
        impl = aggregation.get(implementation) if implementation in aggregation.IMPLEMENTATIONS else None
        own = impl.largest_intermediate_elements(batch, ho, wo, channels, kernel_size) * act if impl else 0
        # An implementation generating on chip never stores the kernel in inference,
        # nor in training when it generates from the stored bottleneck.
        kernel_stored = not (impl and impl.generates and (mode == "inference" or impl.trains_from_hidden))
        largest = max(kernel_bytes if kernel_stored else 0, own, y_bytes)
    elif layer == "conv2d":
        params = trainable = k2 * channels * channels + channels
        macs = batch * ho * wo * k2 * channels * channels
        largest = y_bytes
    elif layer == "depthwise":
        params = trainable = k2 * channels + channels
        macs = batch * ho * wo * k2 * channels
        largest = y_bytes
    else:
        raise ValueError(
            "layer_figures covers the layers 'involution', 'conv2d' and 'depthwise'; "
            f"use model_macs() for models. Received: layer={layer!r}"
        )
    w_bytes = params * WEIGHT_BYTES
    forward_bytes = x_bytes + w_bytes + y_bytes
    training = mode == "training"
    return Figures(
        params=params,
        trainable_params=trainable,
        macs=macs,
        flops=2 * macs * (3 if training else 1),
        bytes_min=3 * x_bytes + 3 * w_bytes + 2 * y_bytes if training else forward_bytes,
        bytes_aggregation=(
            (3 * (x_bytes + kernel_bytes) + 2 * y_bytes if training else x_bytes + kernel_bytes + y_bytes)
            if layer == "involution" else forward_bytes
        ),
        largest_intermediate_bytes=largest,
        macs_generation=parts.get("generation", 0),
        macs_aggregation=parts.get("aggregation", 0),
    )


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def _leaf_layers(model):
    """Layers of a functional/Sequential model, descending into nested models
    but not into layers (an Involution counts as one)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _layer_macs(layer) -> int:
    from layers.involution import Involution

    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense, Involution)):
        try:
            in_shape, out_shape = _shape(layer.input), _shape(layer.output)
        except (AttributeError, ValueError) as error:
            raise ValueError(
                "model_macs needs a functional or Sequential model whose layers are each "
                f"called once. Received: layer {layer.name!r} without a single input ({error})"
            ) from None
        if any(d is None for d in in_shape[1:]) or any(d is None for d in out_shape[1:]):
            raise ValueError(
                "model_macs needs a fixed input shape (no None except the batch axis). "
                f"Received: input_shape={in_shape} at layer {layer.name!r}"
            )
    if isinstance(layer, Involution):
        _, h, w, c = in_shape
        parts = involution_macs(1, h, w, c, layer.kernel_size, layer.strides, layer.groups, layer.reduction_ratio)
        return sum(parts.values())
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return math.prod(out_shape[1:]) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = in_shape[-1] // layer.groups
        return math.prod(out_shape[1:]) * kh * kw * cin
    if isinstance(layer, keras.layers.Dense):
        return math.prod(out_shape[1:]) * in_shape[-1]
    return 0


def model_macs(model: keras.Model) -> int:
    """Forward multiply-accumulates of one input example through a built
    functional or Sequential model with a fixed input shape (Conv2D,
    DepthwiseConv2D, Dense and Involution layers; other layers count 0)."""
    return sum(_layer_macs(layer) for layer in _leaf_layers(model))


def model_params(model: keras.Model) -> int:
    """Parameters counted from the layers' configurations (equals
    `model.count_params()` for the layers the suite uses)."""
    from layers.involution import Involution

    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, Involution):
            total += involution_params(layer.channels, layer.kernel_size, layer.groups, layer.reduction_ratio)[0]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            cin = _shape(layer.input)[-1]
            total += kh * kw * cin * layer.depth_multiplier + (cin * layer.depth_multiplier if layer.use_bias else 0)
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = _shape(layer.input)[-1] // layer.groups
            total += kh * kw * cin * layer.filters + (layer.filters if layer.use_bias else 0)
        elif isinstance(layer, keras.layers.Dense):
            total += _shape(layer.input)[-1] * layer.units + (layer.units if layer.use_bias else 0)
        elif isinstance(layer, keras.layers.BatchNormalization):
            total += 4 * _shape(layer.input)[-1]
        elif layer.weights:
            raise ValueError(
                "model_params counts Conv2D, DepthwiseConv2D, Dense, BatchNormalization and "
                f"Involution layers. Received: layer {layer.name!r} of type {type(layer).__name__}"
            )
    return total
