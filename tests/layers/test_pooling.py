"""layers.pooling: the involution layer's "same" average pooling against the
float64 NumPy reference, forward and gradient, on every backend, at sizes the
stride divides and sizes it does not (the edge windows Keras 3.15 on PyTorch
averaged with replicated cells)."""

from __future__ import annotations

import numpy as np
import pytest

from layers.pooling import average_pool_same
from tests import backend as tb
from tests import numpy_reference as npref

# (height, width, stride): padding none, even, uneven by one cell (8 and 11 px at
# stride 3), by three (9 and 13 px at stride 4), one pixel, a window larger than the input.
GEOMETRIES = [(16, 16, 2), (9, 9, 2), (7, 7, 3), (8, 11, 3), (9, 13, 4), (1, 1, 3), (2, 5, 4), (6, 6, 5)]
IDS = [f"{h}x{w}-s{s}" for h, w, s in GEOMETRIES]


def _input(h: int, w: int, s: int) -> np.ndarray:
    return np.random.default_rng(h * 100 + w * 10 + s).standard_normal((2, h, w, 3)).astype("float32")


@pytest.mark.parametrize("h, w, s", GEOMETRIES, ids=IDS)
def test_average_pool_same_matches_numpy(h, w, s):
    x = _input(h, w, s)
    got = tb.call(lambda t: average_pool_same(t, s), x)
    np.testing.assert_allclose(got, npref.avg_pool_same(x, s), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h, w, s", GEOMETRIES, ids=IDS)
def test_average_pool_same_gradient_matches_numpy(h, w, s):
    x = _input(h, w, s)
    dy = np.random.default_rng(s).standard_normal((2, -(-h // s), -(-w // s), 3)).astype("float32")
    (dx,) = tb.grads(lambda t: average_pool_same(t, s), [x], dy)
    np.testing.assert_allclose(dx, npref.avg_pool_same_grad(x.shape, dy, s), rtol=1e-6, atol=1e-6)
