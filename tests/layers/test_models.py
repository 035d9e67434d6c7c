"""The example's CIFAR-10 models and RedNet/ResNet against published figures."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from layers import counting, models
from tests import numpy_reference as npref

# RedNet: params (M) and GMACs as reported by the official repository
# (d-li14/involution), see docs/SOURCES.md.
REDNET = {26: (9.23, 1.73), 38: (12.39, 2.22), 50: (15.54, 2.71), 101: (25.65, 4.74), 152: (33.99, 6.79)}


def _trainable(model):
    return sum(int(keras.ops.size(w)) for w in model.trainable_weights)


def _non_trainable(model):
    return sum(int(keras.ops.size(w)) for w in model.non_trainable_weights)


def test_seed_conv_model():
    model = models.seed_conv_model()
    assert _trainable(model) == 319_178
    assert _non_trainable(model) == 0
    assert tuple(model(np.zeros((2, 32, 32, 3), "float32")).shape) == (2, 10)


def test_seed_involution_model():
    model = models.seed_involution_model()
    assert _trainable(model) == 13_074
    assert _non_trainable(model) == 6
    assert [layer.name for layer in model.layers if layer.name.startswith("inv_")] == ["inv_1", "inv_2", "inv_3"]
    assert tuple(model(np.zeros((2, 32, 32, 3), "float32")).shape) == (2, 10)


def test_seed_involution_model_trains_with_fit():
    """`model.fit` as the example trains (Adam, logits): the trainable weights
    move, and the batch norms' moving statistics (non-trainable state, carried
    out of JAX's stateless training step) are updated. The real-data epoch of
    `bench.seed_models` runs in the TensorFlow run only."""
    keras.utils.set_random_seed(0)
    model = models.seed_involution_model(input_shape=(8, 8, 3))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.random((16, 8, 8, 3)).astype("float32")  # (B, H, W, C)
    labels = rng.integers(0, 10, 16)
    weights = model.get_layer("inv_1").weights
    before = [keras.ops.convert_to_numpy(w) for w in weights]
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in weights]
    assert np.isfinite(history.history["loss"][0])
    moved = {w.path.split("/")[-1]: not np.array_equal(b, a)
             for w, b, a in zip(weights, before, after, strict=True)}
    assert all(moved.values()), moved


def test_kernel_maps_share_trained_weights():
    model = models.seed_involution_model(implementation="shiftsum")
    rng = np.random.default_rng(0)
    weights = model.get_layer("inv_1").get_weights()
    weights = [rng.standard_normal(w.shape).astype("float32") for w in weights]
    weights[5] = np.abs(weights[5]) + 0.5  # a valid moving variance
    model.get_layer("inv_1").set_weights(weights)
    maps = models.kernel_map_model(model)
    images = rng.random((2, 32, 32, 3)).astype("float32")
    first, second, third = maps.predict(images, verbose=0)
    assert first.shape == (2, 32, 32) and second.shape == (2, 16, 16) and third.shape == (2, 8, 8)
    _, kernel = npref.involution(images, weights, 3, 1, 1)  # (B, H, W, 9)
    np.testing.assert_allclose(first, kernel.sum(axis=-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("depth", sorted(REDNET))
def test_rednet_matches_paper(depth):
    model = models.rednet(depth)
    params, gmacs = REDNET[depth]
    # PyTorch counts parameters, not the batch-norm running statistics.
    assert abs(_trainable(model) / 1e6 / params - 1) < 0.01
    assert abs(counting.model_macs(model) / 1e9 / gmacs - 1) < 0.03
    assert counting.model_params(model) == model.count_params()


def test_resnet50_matches_reference_counts():
    model = models.resnet(50)
    assert _trainable(model) == 25_557_032  # torchvision's ResNet-50
    assert abs(counting.model_macs(model) / 4.09e9 - 1) < 0.01


@pytest.mark.parametrize("builder", [models.rednet, models.resnet])
def test_networks_run_at_low_resolution(builder):
    model = builder(26, resolution=64, classes=7)
    out = model.predict(np.random.default_rng(0).standard_normal((1, 64, 64, 3)).astype("float32"), verbose=0)
    assert tuple(out.shape) == (1, 7)


def test_bad_depth():
    with pytest.raises(ValueError, match="Received: depth=34"):
        models.rednet(34)
