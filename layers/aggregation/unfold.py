"""`unfold` (PyTorch): the official implementation's formulation.

d-li14/involution aggregates with `torch.nn.Unfold` on NCHW tensors; the same
here, after moving the channels-last input to NCHW and padding it like Keras'
"same" (which can be asymmetric, so the padding is applied before unfolding).
Materialises a (B, C*K*K, Ho*Wo) tensor.
"""

from __future__ import annotations

from layers.aggregation._common import same_padding


def aggregate(x, kernel, kernel_size: int, stride: int, groups: int):
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C)."""
    import torch.nn.functional as F

    b, h, w, c = x.shape
    k = kernel_size
    top, bottom, ho = same_padding(h, k, stride)
    left, right, wo = same_padding(w, k, stride)
    xc = x.permute(0, 3, 1, 2)  # (B, C, H, W)
    # F.pad crops on negative widths: rows no window reads.
    xc = F.pad(xc, (left, right, top, bottom))  # (B, C, Hp, Wp)
    cols = F.unfold(xc, k, stride=stride)  # (B, C*K*K, Ho*Wo), ordered (c, i, j)
    cols = cols.view(b, groups, c // groups, k * k, ho, wo)  # (B, G, C/G, K*K, Ho, Wo)
    weight = kernel.view(b, ho, wo, groups, k * k).permute(0, 3, 4, 1, 2)  # (B, G, K*K, Ho, Wo)
    out = (cols * weight.unsqueeze(2)).sum(dim=3)  # (B, G, C/G, Ho, Wo)
    return out.reshape(b, c, ho, wo).permute(0, 2, 3, 1)  # (B, Ho, Wo, C)
