"""The data sets of the Keras example's experiment (`bench.datasets`):
CIFAR-10's python batches and Fashion-MNIST's IDX files, written by the
tests, and a one-line error naming the file that is not what it should be."""

from __future__ import annotations

import numpy as np
import pytest

from bench import datasets
from tests import backend as tb
from tests.cifar import write_tiny_cifar10

pytestmark = tb.BACKEND_INDEPENDENT


def test_cifar10_is_looked_for_in_keras_cache_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "KERAS_CACHE", tmp_path)
    with pytest.raises(datasets.DataError, match="CIFAR-10 not found in .*--download"):
        datasets.load("cifar10", tmp_path / "empty")


def test_unreadable_batch_names_the_file(tmp_path):
    data = write_tiny_cifar10(tmp_path / "cifar")
    (data / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(datasets.DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        datasets.load("cifar10", data)


def test_cifar10_loader_layout(tmp_path):
    data = write_tiny_cifar10(tmp_path / "cifar", per_batch=4)
    ((x, y), (xt, yt)), folder = datasets.load("cifar10", data)
    assert folder == data
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (20,)
    assert xt.shape == (4, 32, 32, 3)
    # Rows are channel-major: the first 1024 bytes are the red plane.
    import pickle

    with open(data / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0]
    assert np.array_equal(x[0, :, :, 0].ravel(), raw[:1024])


def test_fashion_mnist_idx_files(tmp_path):
    """The IDX layout: a magic number, the dimensions, then the bytes."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8)
    for name, magic, array in (("train-images-idx3-ubyte.gz", 2051, images), ("t10k-images-idx3-ubyte.gz", 2051,
                                                                               images),
                               ("train-labels-idx1-ubyte.gz", 2049, labels), ("t10k-labels-idx1-ubyte.gz", 2049,
                                                                              labels)):
        header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(header + array.tobytes())
    ((x, y), (xt, yt)), _ = datasets.load("fashion_mnist", tmp_path)
    assert x.shape == (5, 28, 28, 1) and np.array_equal(x[..., 0], images) and list(y) == [0, 1, 2, 3, 4]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">I", 2051) + b"\0" * 8))
    with pytest.raises(datasets.DataError, match="t10k-labels-idx1-ubyte.gz: not an IDX file"):
        datasets.load("fashion_mnist", tmp_path)
