"""A tiny CIFAR-10 in the official python-pickle layout, for tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_tiny_cifar10(folder: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """data_batch_1..5 and test_batch of `per_batch` random images each, plus
    batches.meta; rows are 3072 bytes, channel-major (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                      b"horse", b"ship", b"truck"]}, f)
    return folder
