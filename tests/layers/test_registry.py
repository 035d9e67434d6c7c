"""The registry: every entry builds on this backend, layers map C -> C."""

from __future__ import annotations

import numpy as np
import pytest

from layers import Involution, registry


def test_layers_and_models_are_registered():
    assert registry.LAYERS == ["involution", "conv2d", "depthwise"]
    assert {"seed_conv", "seed_involution", "rednet26", "rednet50", "resnet26", "resnet50"} <= set(registry.MODELS)
    assert registry.get("involution").implementations() == Involution.implementations()


@pytest.mark.parametrize("name", registry.LAYERS)
def test_layers_map_channels_to_channels(name):
    for implementation in registry.get(name).implementations():
        layer = registry.build(name, channels=8, kernel_size=3, stride=2, groups=2, reduction_ratio=4,
                               implementation=implementation)
        y = layer(np.ones((2, 9, 9, 8), "float32"))
        assert tuple(y.shape) == (2, 5, 5, 8), implementation


def test_models_build():
    for name in ("seed_conv", "seed_involution"):
        model = registry.build(name, implementation=registry.get(name).implementations()[0], resolution=32)
        assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert registry.get("seed_conv").fixed_resolution == 32
    assert registry.get("rednet26").fixed_resolution is None


def test_each_involution_model_has_a_convolution_counterpart():
    """The report sets each involution network against its counterpart: a
    registered model without involution that reads the same axes."""
    for name in registry.MODELS:
        entry = registry.get(name)
        if not entry.involution:
            assert entry.counterpart is None, name
            continue
        other = registry.get(entry.counterpart)
        assert other.kind == "model" and not other.involution, name
        assert (other.axes, other.fixed_resolution) == (entry.axes, entry.fixed_resolution), name
    assert registry.get("rednet50").counterpart == "resnet50"
    assert registry.get("seed_involution").counterpart == "seed_conv"
    assert all(registry.get(name).counterpart is None for name in registry.LAYERS)


def test_unknown_entry_and_implementation():
    with pytest.raises(ValueError, match="Received: layer='conv3d'"):
        registry.build("conv3d")
    with pytest.raises(ValueError, match="Received: implementation='pallas-v9'"):
        registry.build("involution", channels=4, kernel_size=3, stride=1, groups=1, reduction_ratio=1,
                       implementation="pallas-v9")
