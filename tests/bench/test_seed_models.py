"""The Keras example's experiment (`bench.seed_models`): one epoch on real
Fashion-MNIST, and its one-line refusal of missing data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import datasets, seed_models
from tests import backend as tb
from tests.bench.conftest import ROOT
from tests.conftest import needs_system_package


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "bench.seed_models", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


FASHION = datasets.FASHION_MNIST


# The experiment's script (data, history, figure, report) does not depend on
# the backend, and one epoch costs 20-30 s a backend in CI; `fit` with the
# involution layers runs on every backend in tests/layers/test_models.py.
@pytest.mark.skipif(tb.NAME != "tensorflow", reason="the example's backend; fit on every backend is "
                    "tests/layers/test_models.py::test_seed_involution_model_trains_with_fit")
def test_one_epoch_on_fashion_mnist(tmp_path):
    """Both models train on the real data set, offline; on the first 3,000
    images one epoch takes the conv model well above chance (10%)."""
    if not all((FASHION.folders[0] / f).exists() for f in FASHION.files):
        needs_system_package(f"no Fashion-MNIST in {FASHION.folders[0]}: install Debian's dataset-fashion-mnist "
                             "package (apt-get install dataset-fashion-mnist; .ci/run installs it)")
    run = tmp_path / "run"
    result = _run("--dataset", "fashion_mnist", "--epochs", "1", "--limit", "3000", "--run-dir", str(run))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "training seed_conv: 257,162 trainable" in result.stdout
    assert "training seed_involution: 3,916 trainable and 6 non-trainable" in result.stdout
    rows = {r["model"]: r for r in map(json.loads, (run / "seed_history.jsonl").read_text().splitlines())}
    assert set(rows) == {"seed_conv", "seed_involution"}
    assert rows["seed_conv"]["val_accuracy"] > 0.4, rows["seed_conv"]
    for row in rows.values():
        assert row["epoch"] == 1 and row["loss"] > 0 and row["epoch_seconds"] > 0 and row["backend"] == tb.NAME
        assert "Fashion-MNIST from /usr/share/datasets/fashion-mnist (3000 train / 3000 test)" == row["dataset"]
    assert (run / "kernel_maps_fashion_mnist.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "report.html").read_text()
    assert "Fashion-MNIST" in report and "0.7304" in report and "Involution kernel maps" in report


def test_missing_data_is_one_line_naming_where_and_how(tmp_path):
    result = _run("--dataset", "fashion_mnist", "--epochs", "1", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert f"Fashion-MNIST not found in {tmp_path / 'nowhere'}" in result.stderr
    assert "apt-get install dataset-fashion-mnist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_shuffle_buffer_order_is_a_local_permutation():
    order = seed_models.buffer_shuffle_order(1000, 256, np.random.default_rng(0))
    assert sorted(order) == list(range(1000))
    # An element can only come out once the buffer has reached it.
    assert all(order[k] <= k + 255 for k in range(1000))
    assert not np.array_equal(order, np.arange(1000))


def test_sample_images_without_cifar10(tmp_path):
    images = seed_models.sample_images()
    assert images.shape[1:] == (32, 32, 3) and len(images) >= 8 and images.dtype == np.uint8
