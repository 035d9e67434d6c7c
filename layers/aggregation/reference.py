"""`reference`: materialise the K*K patch tensor, multiply, sum over K*K.

This is what the Keras example does. On TensorFlow the patches come from
`tf.image.extract_patches` (the example's op); on the other backends from a
stack of K*K strided slices of the padded input. Either way a
(B, Ho, Wo, K*K, C) tensor is built: memory grows with K*K.
"""

from __future__ import annotations

from keras import backend, ops

from layers.aggregation._common import windows


def _patches(x, kernel_size: int, stride: int):
    """(B, Ho, Wo, K*K, C) patches, offset (i, j) at index i * K + j."""
    k = kernel_size
    if backend.backend() == "tensorflow":
        import tensorflow as tf

        patches = tf.image.extract_patches(
            x,
            sizes=[1, k, k, 1],
            strides=[1, stride, stride, 1],
            rates=[1, 1, 1, 1],
            padding="SAME",
        )  # (B, Ho, Wo, K*K*C), ordered (i, j, c)
        shape = tf.shape(patches)
        return tf.reshape(patches, [shape[0], shape[1], shape[2], k * k, -1])
    window, _, _ = windows(x, k, stride)
    return ops.stack([window(i, j) for i in range(k) for j in range(k)], axis=3)  # (B, Ho, Wo, K*K, C)


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C)."""
    kk = kernel_size * kernel_size
    channels = x.shape[-1]
    patches = _patches(x, kernel_size, stride)  # (B, Ho, Wo, K*K, C)
    shape = ops.shape(patches)
    patches = ops.reshape(
        patches, (-1, shape[1], shape[2], kk, groups, channels // groups)
    )  # (B, Ho, Wo, K*K, G, C/G)
    k = ops.reshape(kernel, (-1, shape[1], shape[2], groups, kk))  # (B, Ho, Wo, G, K*K)
    k = ops.expand_dims(ops.transpose(k, (0, 1, 2, 4, 3)), -1)  # (B, Ho, Wo, K*K, G, 1)
    out = ops.sum(patches * k, axis=3)  # (B, Ho, Wo, G, C/G)
    return ops.reshape(out, (-1, shape[1], shape[2], channels))
