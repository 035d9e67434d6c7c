"""The Keras example's experiment on a tiny CIFAR-10 written by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import seed_models
from tests import backend as tb
from tests.bench.conftest import ROOT
from tests.cifar import write_tiny_cifar10


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "bench.seed_models", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_one_epoch_on_a_tiny_cifar10(tmp_path):
    data = write_tiny_cifar10(tmp_path / "cifar")
    run = tmp_path / "run"
    result = _run("--epochs", "1", "--cifar10", str(data), "--run-dir", str(run))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "training seed_conv: 319,178 trainable" in result.stdout
    assert "training seed_involution: 13,074 trainable and 6 non-trainable" in result.stdout
    rows = [json.loads(line) for line in (run / "seed_history.jsonl").read_text().splitlines()]
    assert [(r["model"], r["epoch"]) for r in rows] == [("seed_conv", 1), ("seed_involution", 1)]
    for row in rows:
        assert 0 <= row["val_accuracy"] <= 1 and row["loss"] > 0 and row["epoch_seconds"] > 0
        assert row["backend"] == tb.NAME
    assert (run / "kernel_maps_cifar10.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "report.html").read_text()
    assert "The Keras example&#39;s CIFAR-10 experiment" in report or "CIFAR-10 experiment" in report
    assert "Involution kernel maps" in report


def test_missing_cifar10_is_a_clear_message_and_exit_2(tmp_path):
    result = _run("--epochs", "1", "--cifar10", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "CIFAR-10 not found in" in result.stderr and "--download" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_batch_names_the_file(tmp_path):
    data = write_tiny_cifar10(tmp_path / "cifar")
    (data / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(seed_models.DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        seed_models.load_cifar10(data)


def test_loader_layout(tmp_path):
    data = write_tiny_cifar10(tmp_path / "cifar", per_batch=4)
    (x, y), (xt, yt) = seed_models.load_cifar10(data)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (20,)
    assert xt.shape == (4, 32, 32, 3)
    # Rows are channel-major: the first 1024 bytes are the red plane.
    import pickle

    with open(data / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0]
    assert np.array_equal(x[0, :, :, 0].ravel(), raw[:1024])


def test_shuffle_buffer_order_is_a_local_permutation():
    order = seed_models.buffer_shuffle_order(1000, 256, np.random.default_rng(0))
    assert sorted(order) == list(range(1000))
    # An element can only come out once the buffer has reached it.
    assert all(order[k] <= k + 255 for k in range(1000))
    assert not np.array_equal(order, np.arange(1000))


def test_sample_images_without_cifar10(tmp_path):
    images = seed_models.sample_images()
    assert images.shape[1:] == (32, 32, 3) and len(images) >= 8 and images.dtype == np.uint8
