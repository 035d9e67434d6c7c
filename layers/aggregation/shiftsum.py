"""`shiftsum`: accumulate K*K shifted windows times their weight.

Never builds the (B, Ho, Wo, K*K, C) patch tensor: the largest intermediates
are one (B, Ho, Wo, C) window, the accumulator and the kernel split into its
K*K taps (the kernel's size again, where the backend copies a split). Costs
K*K passes over the input instead of one, which compilers (XLA) may or may not
fuse.
"""

from __future__ import annotations

from keras import ops

from layers.aggregation._common import windows


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C)."""
    channels = x.shape[-1]
    window, ho, wo = windows(x, kernel_size, stride)
    # One weight tensor per tap, split in one op: the gradient of the split
    # stacks the taps' gradients, where K*K separate indexings k[..., tap]
    # would each scatter theirs into a zero tensor of the kernel's full size
    # (PyTorch and TensorFlow graphs; docs/PERF.md, section 25).
    taps = ops.unstack(
        ops.reshape(kernel, (-1, ho, wo, groups, 1, kernel_size * kernel_size)), axis=-1
    )  # K*K x (B, Ho, Wo, G, 1)
    out = None
    for i in range(kernel_size):
        for j in range(kernel_size):
            win = ops.reshape(
                window(i, j), (-1, ho, wo, groups, channels // groups)
            )  # (B, Ho, Wo, G, C/G)
            term = win * taps[i * kernel_size + j]  # (B, Ho, Wo, G, C/G)
            out = term if out is None else out + term
    return ops.reshape(out, (-1, ho, wo, channels))
