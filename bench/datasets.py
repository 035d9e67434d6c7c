"""The image data sets of the Keras example's experiment, read offline.

- `cifar10`: the official python-pickle batches (data_batch_1..5, test_batch),
  from a folder given or Keras' cache (~/.keras/datasets/cifar-10-batches-py).
- `fashion_mnist`: the four IDX files (train-images-idx3-ubyte.gz, ...), from a
  folder given, Debian's `dataset-fashion-mnist` package
  (/usr/share/datasets/fashion-mnist) or Keras' cache
  (~/.keras/datasets/fashion-mnist).

Nothing is downloaded unless asked (`download=True`, through
`keras.datasets`). A data set that cannot be found is a `DataError` whose
message names where it looked and how to get it. Images come back as uint8
arrays (N, H, W, C), labels as int64 (N,).
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KERAS_CACHE = Path("~/.keras/datasets").expanduser()


class DataError(Exception):
    """A data set missing or unreadable; the message says where and what to do."""


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    input_shape: tuple[int, int, int]
    folders: tuple[Path, ...]  # where it is looked for, in order
    files: tuple[str, ...]
    how_to_get: str


CIFAR10 = Dataset(
    "cifar10", "CIFAR-10", (32, 32, 3), (KERAS_CACHE / "cifar-10-batches-py",),
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
    "put the official python version (cifar-10-python.tar.gz, unpacked) there, pass --data PATH, or add "
    "--download",
)
FASHION_MNIST = Dataset(
    "fashion_mnist", "Fashion-MNIST", (28, 28, 1),
    (Path("/usr/share/datasets/fashion-mnist"), KERAS_CACHE / "fashion-mnist"),
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
     "t10k-labels-idx1-ubyte.gz"),
    "install Debian's package (apt-get install dataset-fashion-mnist), pass --data PATH, or add --download",
)
DATASETS = {d.name: d for d in (CIFAR10, FASHION_MNIST)}


def _folder(dataset: Dataset, path: str | Path | None) -> tuple[Path | None, list[Path]]:
    """The first folder holding every file, and the folders looked in."""
    candidates = [Path(path).expanduser()] if path else list(dataset.folders)
    for folder in candidates:
        if all((folder / name).exists() for name in dataset.files):
            return folder, candidates
    return None, candidates


def _download(dataset: Dataset) -> None:
    import keras

    loader = {"cifar10": keras.datasets.cifar10, "fashion_mnist": keras.datasets.fashion_mnist}[dataset.name]
    try:
        loader.load_data()
    except Exception as error:  # no network, a proxy, a full disk...
        raise DataError(f"--download of {dataset.title} failed ({type(error).__name__}: {error}); "
                        f"{dataset.how_to_get}") from None


def load(name: str, path: str | Path | None = None, download: bool = False):
    """((x_train, y_train), (x_test, y_test)) of data set `name`, and the folder it came from."""
    if name not in DATASETS:
        raise DataError(f"--dataset takes one of {', '.join(DATASETS)}. Received: --dataset={name}")
    dataset = DATASETS[name]
    folder, looked = _folder(dataset, path)
    if folder is None and download and path is None:
        _download(dataset)
        folder, looked = _folder(dataset, path)
    if folder is None:
        where = " or ".join(str(f) for f in looked)
        raise DataError(f"{dataset.title} not found in {where} (it needs {', '.join(dataset.files)}): "
                        f"{dataset.how_to_get}")
    reader = _read_cifar10 if name == "cifar10" else _read_fashion_mnist
    return reader(folder), folder


def _read_cifar10(folder: Path):
    def batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(path, "rb") as f:
                content = pickle.load(f, encoding="bytes")
            data = np.asarray(content[b"data"], dtype=np.uint8)
            labels = np.asarray(content[b"labels"], dtype=np.int64)
            images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as error:
            raise DataError(f"{path}: not a CIFAR-10 python batch ({type(error).__name__}: {error})") from None
        if len(images) != len(labels):
            raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
        return images, labels

    parts = [batch(folder / name) for name in CIFAR10.files[:-1]]
    x_test, y_test = batch(folder / CIFAR10.files[-1])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])), (x_test, y_test)


def _idx(path: Path, magic: int, dims: int) -> np.ndarray:
    """An IDX file (gzip): a big-endian magic number, the dimensions, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        header = np.frombuffer(raw[: 4 * (1 + dims)], dtype=">u4")
        if int(header[0]) != magic:
            raise ValueError(f"magic number {int(header[0])}, expected {magic}")
        shape = tuple(int(n) for n in header[1:])
        return np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + dims)).reshape(shape)
    except (OSError, EOFError, ValueError) as error:
        raise DataError(f"{path}: not an IDX file of the expected kind ({type(error).__name__}: {error})") from None


def _read_fashion_mnist(folder: Path):
    names = FASHION_MNIST.files
    x_train = _idx(folder / names[0], 2051, 3)[..., None]  # (N, 28, 28, 1)
    y_train = _idx(folder / names[1], 2049, 1).astype(np.int64)
    x_test = _idx(folder / names[2], 2051, 3)[..., None]
    y_test = _idx(folder / names[3], 2049, 1).astype(np.int64)
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(images) != len(labels):
            raise DataError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    return (x_train, y_train), (x_test, y_test)
