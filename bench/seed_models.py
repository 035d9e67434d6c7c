"""The Keras example's experiment: train its conv and involution CIFAR-10
models with its recipe and compare curves, parameters and kernel maps.

    python -m bench.seed_models --epochs 20 [--cifar10 PATH] [--run-dir DIR]
                                [--download] [--sample-images]

Recipe (as the example): pixels scaled to [0, 1], Adam (Keras defaults),
sparse categorical cross-entropy on logits, batch 256, a shuffle buffer of
256 images reshuffled every epoch (tf.data's `shuffle(256)` semantics,
reproduced in NumPy so every backend sees the same order), validation on
the 10,000 test images.

Writes into the run directory: `seed_history.jsonl` (a row per model and
epoch, flushed as the epoch ends: loss, accuracy, val_loss, val_accuracy,
epoch_seconds), `kernel_maps_cifar10.png` (the example's figure for 10 test
images), optionally `kernel_maps_sample_images.png`, `run.json` and
`report.html`.

CIFAR-10 is read offline, in the official python-pickle layout, from PATH or
Keras' cache (~/.keras/datasets/cifar-10-batches-py); nothing is downloaded
unless --download is given.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from bench import rundir

CACHE = Path("~/.keras/datasets/cifar-10-batches-py").expanduser()
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
BATCH = 256
SHUFFLE_BUFFER = 256


class DataError(Exception):
    """CIFAR-10 missing or unreadable; the message says where and what to do."""


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as error:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(error).__name__}: {error})") from None
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def load_cifar10(path: Path | None = None, download: bool = False):
    """((x_train, y_train), (x_test, y_test)) as uint8 images and int labels."""
    folder = Path(path).expanduser() if path else CACHE
    missing = [name for name in TRAIN_FILES + [TEST_FILE] if not (folder / name).exists()]
    if missing and download and path is None:
        import keras

        try:
            keras.datasets.cifar10.load_data()
        except Exception as error:  # no network, a proxy, a full disk...
            raise DataError(f"--download failed ({type(error).__name__}: {error}); put the dataset in {CACHE}") \
                from None
        missing = [name for name in TRAIN_FILES + [TEST_FILE] if not (folder / name).exists()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found in {folder} (missing {', '.join(missing)}). Put the official python version "
            f"(cifar-10-python.tar.gz, unpacked: data_batch_1..5, test_batch) there, pass --cifar10 PATH, "
            "or add --download; --sample-images draws kernel maps without it."
        )
    parts = [_read_batch(folder / name) for name in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_batch(folder / TEST_FILE)
    return (x_train, y_train), (x_test, y_test)


def buffer_shuffle_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The order tf.data's `shuffle(buffer)` gives: fill a buffer with the
    first elements, repeatedly emit a random one and refill its slot."""
    order = np.empty(n, dtype=np.int64)
    slots = list(range(min(buffer, n)))
    following = len(slots)
    for k in range(n):
        i = int(rng.integers(len(slots)))
        order[k] = slots[i]
        if following < n:
            slots[i] = following
            following += 1
        else:
            slots[i] = slots[-1]
            slots.pop()
    return order


def _dataset(images, labels, batch, shuffle_buffer=None, seed=0):
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(len(images))
            self.on_epoch_end()

        def __len__(self):
            return -(-len(images) // batch)

        def __getitem__(self, index):
            chosen = self.order[index * batch:(index + 1) * batch]
            return images[chosen].astype("float32") / 255.0, labels[chosen]

        def on_epoch_end(self):
            if shuffle_buffer:
                self.order = buffer_shuffle_order(len(images), shuffle_buffer, self.rng)

    return Batches()


def _history_callback(path: Path, model_name: str, extra: dict):
    import keras

    class History(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"model": model_name, "epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                   "epoch_seconds": time.perf_counter() - self.started, **extra}
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())

    return History()


def train(models: dict, data, epochs: int, run_dir: Path, verbose: int, dataset_name: str) -> dict:
    import keras

    (x_train, y_train), (x_test, y_test) = data
    history = run_dir / rundir.HISTORY
    trained = {}
    for name, build in models.items():
        keras.utils.set_random_seed(42)
        model = build()
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        extra = {
            "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "non_trainable_params": int(sum(np.prod(w.shape) for w in model.non_trainable_weights)),
            "backend": keras.backend.backend(), "dataset": dataset_name,
        }
        print(f"training {name}: {extra['trainable_params']:,} trainable and {extra['non_trainable_params']:,} "
              f"non-trainable parameters, {epochs} epoch(s)", flush=True)
        model.fit(_dataset(x_train, y_train, BATCH, SHUFFLE_BUFFER, seed=42), epochs=epochs,
                  validation_data=_dataset(x_test, y_test, BATCH), verbose=verbose,
                  callbacks=[_history_callback(history, name, extra)])
        trained[name] = model
    return trained


def draw_kernel_maps(model, images: np.ndarray, path: Path, title: str) -> Path:
    """The example's figure: each image beside the per-pixel sum of the
    generated kernels of inv_1, inv_2 and inv_3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from layers.models import kernel_map_model

    maps = kernel_map_model(model).predict(images.astype("float32") / 255.0, verbose=0)
    rows = len(images)
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows), squeeze=False)
    for r in range(rows):
        axes[r][0].imshow(images[r])
        for c, heat in enumerate(maps, start=1):
            axes[r][c].imshow(np.asarray(heat[r]), cmap="viridis")
        for c, label in enumerate(("image", "inv_1 kernels", "inv_2 kernels", "inv_3 kernels")):
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / rows))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def sample_images(count: int = 10) -> np.ndarray:
    """Photographs shipped with scikit-image, centre-cropped to 32x32 RGB."""
    from skimage import data, transform

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "retina",
             "hubble_deep_field", "colorwheel", "logo"]
    out = []
    for name in names[:count]:
        try:
            image = getattr(data, name)()
        except Exception:  # a sample that needs an optional download (pooch)
            continue
        image = image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        crop = image[top:top + side, left:left + side]
        out.append((transform.resize(crop, (32, 32), anti_aliasing=True) * 255).astype(np.uint8))
    return np.stack(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per model (the example: 20)")
    parser.add_argument("--cifar10", metavar="PATH", help="folder of the official python CIFAR-10 batches")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="where to write (default: reports/runs/<UTC>-seed-<backend>)")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 into Keras' cache if missing")
    parser.add_argument("--sample-images", action="store_true",
                        help="also draw kernel maps for scikit-image's sample photographs (works without CIFAR-10)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N training and test images")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        print(f"error: --epochs must be at least 1. Received: --epochs={args.epochs}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1. Received: --limit={args.limit}", file=sys.stderr)
        return 2
    try:
        data = load_cifar10(args.cifar10, download=args.download)
    except DataError as error:
        if not args.sample_images:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"note: {error}", file=sys.stderr)
        data = None

    import keras

    from bench import machine
    from layers.models import seed_conv_model, seed_involution_model

    backend = keras.backend.backend()
    run_dir = Path(args.run_dir or Path("reports") / "runs" / f"{rundir.utc_stamp()}-seed-{backend}")
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.RunDir(run_dir).create({"started": rundir.utc_stamp(), "backend": backend, "device": "",
                                   "device_name": "", "sweep": "seed_models", "sweep_source": "bench/seed_models.py",
                                   "precision": "float32", "machine": machine.info(),
                                   "versions": {"keras": keras.__version__}})
    inv_model = None
    if data is not None:
        if args.limit:
            (xt, yt), (xv, yv) = data
            data = (xt[:args.limit], yt[:args.limit]), (xv[:args.limit], yv[:args.limit])
        name = f"CIFAR-10 from {args.cifar10 or CACHE} ({len(data[0][0])} train / {len(data[1][0])} test)"
        verbose = 1 if sys.stdout.isatty() else 2
        trained = train({"seed_conv": seed_conv_model, "seed_involution": seed_involution_model}, data,
                        args.epochs, run_dir, verbose, name)
        inv_model = trained["seed_involution"]
        path = draw_kernel_maps(inv_model, data[1][0][:10], run_dir / "kernel_maps_cifar10.png",
                                f"Kernel maps of the trained involution model ({args.epochs} epoch(s))")
        print(f"kernel maps: {path}")
    if args.sample_images:
        if inv_model is None:
            keras.utils.set_random_seed(42)
            inv_model = seed_involution_model()
            title = "Kernel maps of an untrained (freshly initialised) involution model, scikit-image photographs"
        else:
            title = "Kernel maps of the trained involution model on scikit-image photographs"
        path = draw_kernel_maps(inv_model, sample_images(), run_dir / "kernel_maps_sample_images.png", title)
        print(f"kernel maps: {path}")
    from reports import build

    print(f"report: {build.build_report([run_dir])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
