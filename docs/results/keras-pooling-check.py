"""Keras' own `AveragePooling2D(s, s, padding="same")` against the float64
NumPy reference that leaves padded cells out of each average (the reference
the layer tests use), at sizes and strides where "same" padding is none, even
or uneven: the largest absolute difference, unit normal input, batch 1, 2
channels. docs/PERF.md, section 31: on PyTorch, Keras 3.15 counts replicated
edge cells where the padding is uneven, so `layers.pooling` replaces it there.

    KERAS_BACKEND=torch python docs/results/keras-pooling-check.py   # or tensorflow, jax

Run from the repository root (it imports `tests.numpy_reference`).
"""

import keras
import numpy as np

from tests.numpy_reference import avg_pool_same

# (size, stride)
CASES = [(7, 2), (9, 2), (10, 3), (8, 3), (11, 3), (9, 4), (13, 4)]


def main():
    rng = np.random.default_rng(0)
    for size, stride in CASES:
        x = rng.standard_normal((1, size, size, 2)).astype("float32")
        pooled = keras.ops.convert_to_numpy(keras.layers.AveragePooling2D(stride, stride, padding="same")(x))
        difference = float(np.abs(np.asarray(pooled) - avg_pool_same(x, stride)).max())
        print(f"{keras.backend.backend()} {size} px, stride {stride}: largest difference {difference:.2g}", flush=True)


if __name__ == "__main__":
    main()
