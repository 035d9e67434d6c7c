"""The involution layer's average pooling by its stride, the same on every
backend.

`keras.layers.AveragePooling2D(s, s, padding="same")` averages each window
over the cells inside the input: padded cells are not counted (TensorFlow's
"SAME" pooling, and Keras on JAX). Keras 3.15 on PyTorch pads an uneven "same"
padding by replicating the edge row or column and counts the copies, so its
windows at the bottom and right edge weigh the edge twice: 8 px at stride 3,
11 px at stride 3 and 9 px at stride 4 give other values than on the other
backends (0.2-0.5 off on unit normal inputs, docs/PERF.md section 31;
keras-team/keras#23233 mends it after 3.15.1). Replication padding also takes a compiled PyTorch training
step through `replication_pad2d_backward`, whose strides TorchInductor
predicts wrongly (docs/PERF.md, section 30).

On PyTorch `average_pool_same` pads the top and left by PyTorch's own
(symmetric) padding and lets `ceil_mode` add the last, partial window at the
bottom and right; `count_include_pad=False` leaves every padded cell out of
the count. Elsewhere it is Keras' own operation.
"""

from __future__ import annotations

from keras import backend, ops

from layers.aggregation._common import same_padding

_ON_TORCH = backend.backend() == "torch"  # fixed when Keras is imported
if _ON_TORCH:  # imported here: torch.compile cannot trace an import
    import torch.nn.functional as torch_functional

__all__ = ["average_pool_same"]


def average_pool_same(x, stride: int):
    """Average pooling of x (B, H, W, C) by `stride` windows at `stride`,
    "same" padding, padded cells not counted -> (B, ceil(H/s), ceil(W/s), C).

    Example:

    >>> average_pool_same(ops.ones((2, 9, 9, 4)), 2).shape
    (2, 5, 5, 4)
    """
    if not _ON_TORCH:
        return ops.average_pool(x, stride, stride, padding="same")
    _, height, width, _ = x.shape
    # Conv2D's "same" padding of a stride-sized window: (before, after); PyTorch pads `before` on both
    # sides, and ceil_mode's last window covers the rest (before <= after <= before + 1).
    padding = (same_padding(height, stride, stride)[0], same_padding(width, stride, stride)[0])
    # A (B, C, H, W) view of the channels-last tensor: PyTorch pools it in that
    # layout without a copy, and the output's permutation back is contiguous.
    pooled = torch_functional.avg_pool2d(x.permute(0, 3, 1, 2), stride, stride, padding=padding, ceil_mode=True,
                                         count_include_pad=False)  # (B, C, Ho, Wo)
    return pooled.permute(0, 2, 3, 1)  # (B, Ho, Wo, C)
