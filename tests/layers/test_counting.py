"""Analytic counts against the frameworks' own parameter counts and against
the MACs that model_macs finds by walking a model."""

from __future__ import annotations

import keras
import pytest

from layers import counting, registry

CASES = [
    dict(channels=16, kernel_size=3, stride=1, groups=2, reduction_ratio=4),
    dict(channels=64, kernel_size=7, stride=2, groups=4, reduction_ratio=4),
    dict(channels=3, kernel_size=3, stride=1, groups=1, reduction_ratio=2),
    dict(channels=3, kernel_size=5, stride=2, groups=1, reduction_ratio=4),
    dict(channels=12, kernel_size=1, stride=3, groups=12, reduction_ratio=1),
]


CASE_ID = "c{channels}-k{kernel_size}-s{stride}-g{groups}-r{reduction_ratio}"


@pytest.mark.parametrize("layer_name", registry.LAYERS)
@pytest.mark.parametrize("case", CASES, ids=CASE_ID.format_map)
def test_params_equal_count_params(layer_name, case):
    implementation = registry.get(layer_name).implementations()[0]
    layer = registry.build(layer_name, implementation=implementation, **case)
    layer.build((None, 9, 9, case["channels"]))
    figures = counting.layer_figures(layer_name, implementation, batch=2, resolution=9, **case)
    assert figures.params == layer.count_params()
    trainable = sum(int(keras.ops.size(w)) for w in layer.trainable_weights)
    assert figures.trainable_params == trainable


@pytest.mark.parametrize("layer_name", registry.LAYERS)
def test_layer_macs_equal_model_walk(layer_name):
    case = dict(channels=16, kernel_size=5, stride=2, groups=4, reduction_ratio=4)
    inputs = keras.Input((11, 13, 16))
    implementation = "auto" if layer_name == "involution" else "keras"
    model = keras.Model(inputs, registry.build(layer_name, implementation=implementation, **case)(inputs))
    figures = counting.layer_figures(layer_name, "reference", batch=1, resolution=(11, 13), **case)
    assert counting.model_macs(model) == figures.macs
    assert counting.model_params(model) == model.count_params() == figures.params
    assert figures.flops == 2 * figures.macs


def test_involution_macs_by_hand():
    # 2 x 4 x 4 output pixels; C = 8, C/r = 2, K = 3, G = 2.
    f = counting.layer_figures("involution", "shiftsum", batch=2, resolution=8, channels=8, kernel_size=3,
                               stride=2, groups=2, reduction_ratio=4)
    assert f.macs_generation == 32 * (8 * 2 + 2 * 18)
    assert f.macs_aggregation == 32 * 8 * 9
    assert f.macs == f.macs_generation + f.macs_aggregation


def test_training_and_bytes():
    args = dict(batch=4, resolution=16, channels=32, kernel_size=7, stride=1, groups=2, reduction_ratio=4)
    inf = counting.layer_figures("involution", "reference", **args)
    train = counting.layer_figures("involution", "reference", mode="training", **args)
    assert train.flops == 3 * inf.flops
    x = 4 * 16 * 16 * 32 * 4
    w = inf.params * 4
    assert inf.bytes_min == x + w + x
    assert train.bytes_min == 3 * x + 3 * w + 2 * x
    kernel = 4 * 16 * 16 * 49 * 2 * 4
    assert inf.bytes_aggregation == x + kernel + x
    # backward: read x, kernel and dy, write dx and d_kernel
    assert train.bytes_aggregation == inf.bytes_aggregation + 2 * x + 2 * kernel + x
    strided = counting.layer_figures("involution", "reference", **(args | {"stride": 2}))
    assert strided.bytes_aggregation == x + kernel // 4 + x // 4
    half = counting.layer_figures("involution", "reference", dtype="mixed_bfloat16", **args)
    assert half.bytes_aggregation == inf.bytes_aggregation // 2


def test_largest_intermediate_follows_the_implementation():
    args = dict(batch=2, resolution=8, channels=16, kernel_size=5, stride=1, groups=1, reduction_ratio=4)
    patches = counting.layer_figures("involution", "reference", **args).largest_intermediate_bytes
    shifted = counting.layer_figures("involution", "shiftsum", **args).largest_intermediate_bytes
    assert patches == 2 * 8 * 8 * 25 * 16 * 4
    assert shifted == 2 * 8 * 8 * 25 * 1 * 4  # the generated kernel is then the largest


def test_on_chip_generation_stores_no_kernel():
    args = dict(batch=2, resolution=8, channels=16, kernel_size=5, stride=1, groups=1, reduction_ratio=4)
    unfused = counting.layer_figures("involution", "triton", **args).largest_intermediate_bytes
    fused = counting.layer_figures("involution", "triton_fused", **args).largest_intermediate_bytes
    assert unfused == 2 * 8 * 8 * 25 * 4  # the generated kernel
    assert fused == 2 * 8 * 8 * 16 * 4  # the output
    training = counting.layer_figures("involution", "triton_fused", mode="training", **args)
    assert training.largest_intermediate_bytes == fused  # trained from the stored bottleneck


def test_model_macs_needs_fixed_shape():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="fixed input shape"):
        counting.model_macs(model)


def test_unknown_layer_name():
    with pytest.raises(ValueError, match="Received: layer='pooling'"):
        counting.layer_figures("pooling", "keras", batch=1, resolution=4, channels=1, kernel_size=1, stride=1)
