"""A float64 NumPy involution, written from the definition with plain loops.

Independent of every implementation under test: no Keras, no shared helpers.
Padding follows TensorFlow's "SAME" rule (the odd pixel at the end), grouping
the official code's (channel c in group c // (C / G); generated channel
g * K * K + i * K + j weighs offset (i, j)).
"""

from __future__ import annotations

import numpy as np

BN_EPSILON = 1e-3  # keras.layers.BatchNormalization's default


def same_geometry(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    pad = max((out - 1) * s + k - size, 0)
    return out, pad // 2


def _taps(h: int, w: int, k: int, s: int):
    """Every (output row, output column, input row, input column, i, j) where
    window offset (i, j) of an output pixel lands inside the input."""
    ho, top = same_geometry(h, k, s)
    wo, left = same_geometry(w, k, s)
    for i in range(k):
        for j in range(k):
            for oy in range(ho):
                iy = oy * s + i - top
                for ox in range(wo):
                    ix = ox * s + j - left
                    if 0 <= iy < h and 0 <= ix < w:
                        yield oy, ox, iy, ix, i, j


def aggregate(x: np.ndarray, kernel: np.ndarray, k: int, s: int, groups: int) -> np.ndarray:
    """x (B, H, W, C), kernel (B, Ho, Wo, G*K*K) -> (B, Ho, Wo, C), float64."""
    x = x.astype(np.float64)
    kernel = kernel.astype(np.float64)
    b, h, w, c = x.shape
    cg = c // groups
    out = np.zeros((b, same_geometry(h, k, s)[0], same_geometry(w, k, s)[0], c))
    for oy, ox, iy, ix, i, j in _taps(h, w, k, s):
        for g in range(groups):
            weight = kernel[:, oy, ox, g * k * k + i * k + j]  # (B,)
            out[:, oy, ox, g * cg:(g + 1) * cg] += weight[:, None] * x[:, iy, ix, g * cg:(g + 1) * cg]
    return out


def aggregate_grads(x, kernel, dy, k, s, groups):
    """Gradients of sum(aggregate(x, kernel) * dy) with respect to x and kernel."""
    x = x.astype(np.float64)
    kernel = kernel.astype(np.float64)
    dy = dy.astype(np.float64)
    b, h, w, c = x.shape
    cg = c // groups
    dx = np.zeros_like(x)
    dk = np.zeros_like(kernel)
    for oy, ox, iy, ix, i, j in _taps(h, w, k, s):
        for g in range(groups):
            sl = slice(g * cg, (g + 1) * cg)
            t = g * k * k + i * k + j
            dk[:, oy, ox, t] += np.sum(dy[:, oy, ox, sl] * x[:, iy, ix, sl], axis=1)
            dx[:, iy, ix, sl] += kernel[:, oy, ox, t][:, None] * dy[:, oy, ox, sl]
    return dx, dk


def _pool_windows(h: int, w: int, s: int):
    """(oy, ox, rows, columns) of each window of "same" pooling by s at s,
    clipped to the input: the padded cells are not in it."""
    ho, top = same_geometry(h, s, s)
    wo, left = same_geometry(w, s, s)
    for oy in range(ho):
        for ox in range(wo):
            y0, x0 = max(oy * s - top, 0), max(ox * s - left, 0)
            y1, x1 = min(oy * s - top + s, h), min(ox * s - left + s, w)
            yield oy, ox, slice(y0, y1), slice(x0, x1)


def avg_pool_same(x: np.ndarray, s: int) -> np.ndarray:
    """AveragePooling2D(s, s, padding="same"): padded cells are not counted."""
    b, h, w, c = x.shape
    out = np.zeros((b, -(-h // s), -(-w // s), c))
    for oy, ox, rows, columns in _pool_windows(h, w, s):
        out[:, oy, ox] = x[:, rows, columns].mean(axis=(1, 2))
    return out


def avg_pool_same_grad(x_shape: tuple, dy: np.ndarray, s: int) -> np.ndarray:
    """The gradient of sum(avg_pool_same(x, s) * dy) with respect to x: each
    output's gradient shared equally by the cells of its window."""
    dx = np.zeros(x_shape)
    for oy, ox, rows, columns in _pool_windows(x_shape[1], x_shape[2], s):
        window = dx[:, rows, columns]  # (B, h, w, C), a view
        window += dy[:, oy, ox][:, None, None, :] / (window.shape[1] * window.shape[2])
    return dx


def involution(x, weights, k, s, groups, training=False):
    """The whole layer. `weights` in get_weights() order: reduce kernel, reduce
    bias, gamma, beta, moving mean, moving variance, span kernel, span bias."""
    wr, br, gamma, beta, mean, var, ws, bs = (np.asarray(v, np.float64) for v in weights)
    x = x.astype(np.float64)
    pooled = avg_pool_same(x, s) if s > 1 else x
    hidden = pooled @ wr.reshape(wr.shape[-2], wr.shape[-1]) + br
    if training:
        mean = hidden.mean(axis=(0, 1, 2))
        var = hidden.var(axis=(0, 1, 2))
    hidden = (hidden - mean) / np.sqrt(var + BN_EPSILON) * gamma + beta
    hidden = np.maximum(hidden, 0.0)
    kernel = hidden @ ws.reshape(ws.shape[-2], ws.shape[-1]) + bs
    return aggregate(x, kernel, k, s, groups), kernel
