"""RedNet (Li et al., CVPR 2021) and the ResNet it is compared with.

Both are ImageNet networks of bottleneck blocks in four stages (64, 128, 256
and 512 middle channels, expansion 4, stride on the block's spatial layer).
They differ in two places:

- the spatial layer of each bottleneck: a 3x3 convolution in ResNet, a 7x7
  involution with 16 channels per group and reduction 4 in RedNet;
- the stem: ResNet has a 7x7 stride-2 convolution to 64 channels; RedNet a
  3x3 stride-2 convolution to 32 channels, a 3x3 involution (16 channels per
  group), batch norm, ReLU and a 3x3 convolution to 64 channels.

This follows the official RedNet code (d-li14/involution, mmcls style:
convolutions before batch norm carry no bias, downsampling by a strided 1x1
convolution). The involutions here keep the bias of their reduction
convolution (see `layers.Involution`), a few hundred parameters per network.
"""

from __future__ import annotations

import keras
from keras import layers as kl

from layers.involution import Involution

# Bottleneck blocks per stage.
STAGES = {
    26: (1, 2, 4, 1),
    38: (2, 3, 5, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
GROUP_CHANNELS = 16


def _check_depth(depth) -> tuple[int, ...]:
    if depth not in STAGES:
        raise ValueError(f"`depth` must be one of {sorted(STAGES)}. Received: depth={depth!r}")
    return STAGES[depth]


def _conv_bn(x, filters, kernel_size, strides=1, relu=True, name=None):
    x = kl.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = kl.BatchNormalization(name=f"{name}_bn")(x)
    return kl.ReLU(name=f"{name}_relu")(x) if relu else x


def _spatial(x, channels, strides, involution, implementation, name):
    if not involution:
        return _conv_bn(x, channels, 3, strides, name=name)
    x = Involution(
        7, strides=strides, groups=channels // GROUP_CHANNELS, reduction_ratio=4,
        implementation=implementation, name=f"{name}_inv",
    )(x)
    x = kl.BatchNormalization(name=f"{name}_bn")(x)
    return kl.ReLU(name=f"{name}_relu")(x)


def _bottleneck(x, mid, strides, involution, implementation, name):
    out_channels = mid * 4
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = _conv_bn(x, out_channels, 1, strides, relu=False, name=f"{name}_down")
    y = _conv_bn(x, mid, 1, name=f"{name}_1")
    y = _spatial(y, mid, strides, involution, implementation, f"{name}_2")
    y = _conv_bn(y, out_channels, 1, relu=False, name=f"{name}_3")
    y = kl.Add(name=f"{name}_add")([y, shortcut])
    return kl.ReLU(name=f"{name}_out")(y)


def _network(depth, involution, resolution, classes, implementation, name):
    blocks = _check_depth(depth)
    inputs = keras.Input((resolution, resolution, 3), name="image")
    if involution:
        x = _conv_bn(inputs, 32, 3, 2, name="stem_1")
        x = Involution(3, groups=32 // GROUP_CHANNELS, reduction_ratio=4,
                       implementation=implementation, name="stem_inv")(x)
        x = kl.BatchNormalization(name="stem_inv_bn")(x)
        x = kl.ReLU(name="stem_inv_relu")(x)
        x = _conv_bn(x, 64, 3, name="stem_2")
    else:
        x = _conv_bn(inputs, 64, 7, 2, name="stem")
    x = kl.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, count in enumerate(blocks):
        mid = 64 * 2**stage
        for block in range(count):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, mid, strides, involution, implementation, f"s{stage + 1}b{block + 1}")
    x = kl.GlobalAveragePooling2D(name="pool")(x)
    outputs = kl.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"{name}{depth}")


def rednet(depth: int, resolution: int = 224, classes: int = 1000, implementation: str = "auto") -> keras.Model:
    """RedNet-`depth` (26, 38, 50, 101 or 152) for `resolution` px RGB images.

    Example:

    >>> model = rednet(50)
    >>> model.count_params()  # the paper reports 15.54M
    """
    return _network(depth, True, resolution, classes, implementation, "rednet")


def resnet(depth: int, resolution: int = 224, classes: int = 1000) -> keras.Model:
    """ResNet-`depth` (26, 38, 50, 101 or 152), bottleneck blocks, the RedNet
    paper's baseline."""
    return _network(depth, False, resolution, classes, "auto", "resnet")
