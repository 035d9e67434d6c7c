"""The Keras example's experiment: train its conv and involution models with
its recipe, on CIFAR-10 as the example did or on Fashion-MNIST, and compare
accuracy, parameters, time and kernel maps.

    python -m bench.seed_models --dataset fashion_mnist|cifar10 --epochs 20
                                [--data PATH] [--limit N] [--run-dir DIR]
                                [--download] [--sample-images]

Recipe (as the example): pixels scaled to [0, 1], Adam (Keras defaults),
sparse categorical cross-entropy on logits, batch 256, a shuffle buffer of
256 images reshuffled every epoch (tf.data's `shuffle(256)` semantics,
reproduced in NumPy so every backend sees the same order), validation on
the test images. The two models are built for the data set's input shape
(`layers.models.seed`).

Writes into the run directory: `seed_history.jsonl` (a row per model and
epoch, flushed as the epoch ends: loss, accuracy, val_loss, val_accuracy,
epoch_seconds, parameters, data set), `kernel_maps_<dataset>.png` (the
example's figure for 10 test images), optionally
`kernel_maps_sample_images.png`, `run.json` and `report.html`.

Data are read offline (`bench.datasets`): nothing is downloaded unless
--download is given; a data set that cannot be found is one line naming where
the command looked and how to get it, and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench import command_line, datasets, keras_backend, rundir

BATCH = 256
SHUFFLE_BUFFER = 256


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
        model = build(x_train.shape[1:])
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
        if images.shape[-1] == 1:
            axes[r][0].imshow(images[r][..., 0], cmap="gray")
        else:
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
    parser = command_line.Parser(prog="python -m bench.seed_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar10", choices=sorted(datasets.DATASETS),
                        help="the data set (default: cifar10, the example's)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per model (the example: 20)")
    parser.add_argument("--data", "--cifar10", dest="data", metavar="PATH",
                        help="folder holding the data set's files (default: the places bench.datasets looks)")
    parser.add_argument("--run-dir", metavar="DIR",
                        help=f"where to write (default: {rundir.RUNS.as_posix()}/<UTC time>-seed-<dataset>-<backend>)")
    parser.add_argument("--download", action="store_true", help="download the data set through keras.datasets")
    parser.add_argument("--sample-images", action="store_true",
                        help="also draw kernel maps for scikit-image's sample photographs (works without data)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N training and test images")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        print(f"error: --epochs must be at least 1. Received: --epochs={args.epochs}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1. Received: --limit={args.limit}", file=sys.stderr)
        return 2
    if message := keras_backend.problem():
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        data, folder = datasets.load(args.dataset, args.data, download=args.download)
    except datasets.DataError as error:
        if not args.sample_images:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"note: {error}", file=sys.stderr)
        data, folder = None, None

    from bench import quiet

    # The frameworks' notices (oneDNN, CPU features, XLA) are not this tool's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines
    with quiet.native_stderr():
        import keras

        from bench import machine
        from layers.models import seed_conv_model, seed_involution_model

        keras.ops.convert_to_tensor(np.zeros(1))  # the backend's device set-up, also noisy
    backend = keras.backend.backend()
    dataset = datasets.DATASETS[args.dataset]
    run_dir = Path(args.run_dir or rundir.default_path(".", f"seed-{args.dataset.replace('_', '-')}-{backend}"))
    try:  # create() makes the folder; an unusable one is a one-line RunDirError naming --run-dir
        rundir.RunDir(run_dir).create({
            "started": rundir.utc_stamp(), "backend": backend, "device": "", "device_name": machine.cpu_model(),
            "sweep": "seed_models", "sweep_source": "bench/seed_models.py", "precision": "float32",
            "dataset": dataset.title, "epochs": args.epochs, "limit": args.limit, "machine": machine.info(),
            "versions": {"keras": keras.__version__}})
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    inv_model = None
    if data is not None:
        if args.limit:
            (xt, yt), (xv, yv) = data
            data = (xt[:args.limit], yt[:args.limit]), (xv[:args.limit], yv[:args.limit])
        name = f"{dataset.title} from {folder} ({len(data[0][0])} train / {len(data[1][0])} test)"
        verbose = 1 if sys.stdout.isatty() else 2
        trained = train({"seed_conv": seed_conv_model,
                         "seed_involution": lambda shape: seed_involution_model(input_shape=shape)},
                        data, args.epochs, run_dir, verbose, name)
        inv_model = trained["seed_involution"]
        path = draw_kernel_maps(inv_model, data[1][0][:10], run_dir / f"kernel_maps_{args.dataset}.png",
                                f"Kernel maps of the trained involution model, {dataset.title} "
                                f"({args.epochs} epoch(s))")
        print(f"kernel maps: {path}")
    if args.sample_images:
        if inv_model is None or inv_model.input_shape[-1] != 3:
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
