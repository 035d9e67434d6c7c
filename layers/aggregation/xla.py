"""`xla` (TensorFlow): the shift-sum aggregation compiled by XLA.

`tf.function(jit_compile=True)` around the `shiftsum` formulation, so that XLA
fuses the K*K multiply-adds into one loop over the output even when the
surrounding model runs as a plain (non-XLA) TensorFlow graph. It compiles
`shiftsum`'s own gradient too (docs/PERF.md, section 26).
"""

from __future__ import annotations

import functools

from layers.aggregation import shiftsum


@functools.cache
def _compiled(kernel_size: int, stride: int, groups: int, channels: int, dtype: str):
    import tensorflow as tf

    # One trace per layer geometry: batch, height and width stay open (XLA
    # compiles each concrete shape), the channels must stay known.
    signature = [
        tf.TensorSpec([None, None, None, channels], dtype),
        tf.TensorSpec([None, None, None, groups * kernel_size * kernel_size], dtype),
    ]

    @tf.function(jit_compile=True, input_signature=signature)
    def run(x, kernel):
        return shiftsum.aggregate(x, kernel, kernel_size, stride, groups)

    return run


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C)."""
    return _compiled(kernel_size, stride, groups, int(x.shape[-1]), x.dtype.name)(x, kernel)
