"""The Involution layer: whole-layer numerics, shapes, configuration, errors,
mixed precision, variable resolution and serialization."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib

import keras
import numpy as np
import pytest

from layers import Involution, aggregation
from tests import backend as tb
from tests import numpy_reference as npref

IMPLEMENTATIONS = aggregation.names()
# Implementations that generate the kernel on chip in inference: with
# return_kernel, and in training unless they generate from the stored
# bottleneck (trains_from_hidden), they run another implementation's path (trains_as).
GENERATING = [name for name in IMPLEMENTATIONS if aggregation.get(name).generates]
FROM_HIDDEN = [name for name in GENERATING if aggregation.get(name).trains_from_hidden]
AGGREGATING = [name for name in IMPLEMENTATIONS if name not in GENERATING]


def _rng(*salt):
    return np.random.default_rng(zlib.crc32(repr(salt).encode()))


def _random_weights(layer, rng):
    """Random values for every weight, BN statistics included (variance > 0)."""
    weights = [rng.standard_normal(w.shape).astype("float32") * 0.5 for w in layer.get_weights()]
    weights[5] = rng.uniform(0.5, 2.0, weights[5].shape).astype("float32")
    return weights


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", AGGREGATING)
@pytest.mark.parametrize(
    "geometry", [(2, 9, 8, 8, 3, 1, 2, 4), (1, 11, 11, 12, 5, 2, 3, 2), (2, 7, 8, 3, 3, 3, 1, 4)],
    ids=lambda g: "b{}-{}x{}-c{}-k{}-s{}-g{}-r{}".format(*g),
)
def test_layer_matches_numpy(name, geometry, training):
    b, h, w, c, k, s, g, r = geometry
    rng = _rng(name, geometry, training)
    x = rng.standard_normal((b, h, w, c)).astype("float32")
    layer = Involution(k, strides=s, groups=g, reduction_ratio=r, implementation=name, return_kernel=True)
    layer.build(x.shape)
    weights = _random_weights(layer, rng)
    layer.set_weights(weights)
    out, kernel = layer(tb.tensor(x), training=training)
    expected, expected_kernel = npref.involution(x, weights, k, s, g, training=training)
    ho, wo = -(-h // s), -(-w // s)
    assert tuple(out.shape) == (b, ho, wo, c)
    assert tuple(kernel.shape) == (b, ho, wo, g, k, k)
    np.testing.assert_allclose(tb.to_numpy(out), expected, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(tb.to_numpy(kernel).reshape(b, ho, wo, -1), expected_kernel, rtol=2e-4, atol=2e-4)


def _fused_layer(name, geometry, rng, dtype=None):
    b, h, w, c, k, s, g, r = geometry
    layer = Involution(k, strides=s, groups=g, reduction_ratio=r, implementation=name, dtype=dtype)
    layer.build((b, h, w, c))
    weights = _random_weights(layer, rng)
    layer.set_weights(weights)
    return layer, weights


def _fused_pair_case(name: str, salt: str):
    """(x, dy, fused, unfused) on one odd geometry (9 px, stride 2, 2 groups):
    a generating layer and its `trains_as` counterpart with the same random
    weights, an input and an output gradient."""
    b, h, w, c, k, s, g, r = geometry = (2, 9, 9, 8, 3, 2, 2, 2)
    rng = _rng(salt, name)
    x = rng.standard_normal((b, h, w, c)).astype("float32")
    dy = rng.standard_normal((b, 5, 5, c)).astype("float32")
    fused, weights = _fused_layer(name, geometry, rng)
    unfused = Involution(k, strides=s, groups=g, reduction_ratio=r, implementation=aggregation.get(name).trains_as)
    unfused.build((b, h, w, c))
    unfused.set_weights(weights)
    return x, dy, fused, unfused


# Odd sizes, strides 1-3 (8 px at stride 3: "same" pooling pads unevenly, see
# layers.pooling), groups of 1 to 64 channels, reduced widths 1 to 24,
# inputs read in two steps of the reduce matmul (`input_channel_block`: 32
# channels a step), the second one full (C = 64) or partial (C = 48)
# (b, h, w, c, k, s, g, r).
GENERATION_GEOMETRIES = [
    (2, 9, 8, 8, 3, 1, 2, 4),
    (1, 11, 11, 12, 5, 2, 3, 2),
    (2, 7, 8, 3, 3, 3, 1, 4),
    (1, 6, 7, 64, 3, 1, 1, 4),
    (1, 5, 5, 8, 3, 2, 8, 4),
    (1, 7, 6, 48, 7, 1, 2, 2),
]


def _inference(layer, x: np.ndarray) -> np.ndarray:
    """layer(x, training=False) as float32, no gradient recorded (compiled on JAX)."""
    if tb.NAME == "torch":
        import torch

        with torch.no_grad():
            return tb.to_numpy(keras.ops.cast(layer(tb.tensor(x), training=False), "float32"))
    return tb.call(lambda t: keras.ops.cast(layer(t, training=False), "float32"), x)


@pytest.mark.skipif(not GENERATING, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name, geometry", tb.implementation_cases(GENERATING, GENERATION_GEOMETRIES),
                         ids=lambda v: v if isinstance(v, str) else "b{}-{}x{}-c{}-k{}-s{}-g{}-r{}".format(*v))
def test_generation_inside_the_kernel_matches_numpy(name, geometry, dtype, monkeypatch):
    module = aggregation.get(name).module()

    def unfused(*args, **kwargs):
        raise AssertionError("the fused kernel must run when no gradient is needed")

    for path in ("_with_gradients", "_unfused"):  # the paths taken when gradients are needed
        if hasattr(module, path):
            monkeypatch.setattr(module, path, unfused)
    b, h, w, c, k, s, g, r = geometry
    rng = _rng(name, geometry, dtype)
    x = rng.standard_normal((b, h, w, c)).astype("float32")
    layer, weights = _fused_layer(name, geometry, rng, dtype)
    got = _inference(layer, x)
    expected, _ = npref.involution(x, weights, k, s, g, training=False)
    assert got.shape == expected.shape
    if dtype == "float32":
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)
    else:  # bfloat16 input and output, float32 inside
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 2e-2


@pytest.mark.skipif(not GENERATING, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("name", GENERATING)
def test_generation_inside_the_kernel_against_its_unfused_path(name):
    """The fused inference path against the implementation it trains as, on
    the same weights: outputs, and gradients when an inference call needs
    them (then it differentiates the unfused path)."""
    x, dy, fused, unfused = _fused_pair_case(name, "fused-vs-unfused")
    np.testing.assert_allclose(_inference(fused, x), _inference(unfused, x), rtol=1e-4, atol=1e-4)
    got = tb.layer_weight_grads(fused, x, dy, training=False)
    want = tb.layer_weight_grads(unfused, x, dy, training=False)
    assert len(got) == 6 and any(np.abs(v).max() > 0 for v in got)
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


def _training_step(layer, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output, input gradient) of a training call (batch statistics), as
    float32; on JAX a stateless, compiled call (no statistics updated)."""
    if tb.NAME == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def forward(t):
            return layer.stateless_call(trainable, non_trainable, t, training=True)[0].astype(jnp.float32)

        @jax.jit
        def step(t):
            y, vjp = jax.vjp(forward, t)
            return y, vjp(jnp.asarray(dy))[0]

        return tuple(np.asarray(a) for a in step(jnp.asarray(x)))
    if tb.NAME == "torch":
        import torch

        xt = tb.tensor(x)
        xt.requires_grad_(True)
        y = layer(xt, training=True).float()
        (dx,) = torch.autograd.grad((y * tb.tensor(dy)).sum(), [xt])
        return tb.to_numpy(y.detach()), tb.to_numpy(dx)
    raise NotImplementedError(f"no generating implementation on {tb.NAME}")


@pytest.mark.skipif(not FROM_HIDDEN, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("name", FROM_HIDDEN)
def test_training_from_the_bottleneck_against_the_unfused_path(name, monkeypatch):
    """Training with the kernel generated on chip from the stored bottleneck
    against the implementation that stores it (trains_as), same weights:
    outputs, input gradients, weight gradients (batch statistics in both)."""
    module = aggregation.get(name).module()
    calls = []
    original = module.aggregate_hidden
    monkeypatch.setattr(module, "aggregate_hidden", lambda *a: calls.append(1) or original(*a))
    x, dy, fused, unfused = _fused_pair_case(name, "training-from-hidden")
    for got, want, what in zip(_training_step(fused, x, dy), _training_step(unfused, x, dy), ("out", "dx"),
                               strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=what)
    got = tb.layer_weight_grads(fused, x, dy, training=True)
    want = tb.layer_weight_grads(unfused, x, dy, training=True)
    assert len(got) == 6 and all(np.abs(v).max() > 0 for v in got)
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)
    assert calls, "the training step did not take the generating path"


def test_weight_order_and_counts():
    layer = Involution(3, groups=2, reduction_ratio=4)
    layer.build((None, None, None, 16))
    shapes = [tuple(w.shape) for w in layer.get_weights()]
    assert shapes == [(1, 1, 16, 4), (4,), (4,), (4,), (4,), (4,), (1, 1, 4, 18), (18,)]
    assert [v.trainable for v in layer.weights] == [True, True, True, True, False, False, True, True]


def test_reduced_channels_never_zero():
    layer = Involution(3, reduction_ratio=4)
    out = layer(np.zeros((1, 5, 5, 3), "float32") + 1.0)
    assert layer.reduced_channels == 1
    assert tuple(out.shape) == (1, 5, 5, 3)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_weight_gradients_agree_across_implementations(name):
    rng = _rng("weight-grads")
    x = rng.standard_normal((2, 9, 9, 8)).astype("float32")
    dy = rng.standard_normal((2, 5, 5, 8)).astype("float32")
    grads = {}
    for impl in ("reference", name):
        layer = Involution(3, strides=2, groups=2, reduction_ratio=2, implementation=impl)
        layer.build(x.shape)
        layer.set_weights(_random_weights(layer, _rng("weights")))
        grads[impl] = tb.layer_weight_grads(layer, x, dy)
    assert len(grads[name]) == 6  # reduce kernel, bias, gamma, beta, span kernel, bias
    for got, want in zip(grads[name], grads["reference"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(15, 17), (8, 8), (1, 1)])
@pytest.mark.parametrize("k,s", [(1, 1), (2, 2), (4, 3), (7, 2)])
def test_output_shape_equals_conv2d(size, k, s):
    x = np.random.default_rng(0).standard_normal((2, *size, 4)).astype("float32")
    conv = keras.layers.Conv2D(4, k, strides=s, padding="same")
    inv = Involution(k, strides=s, groups=2, implementation="shiftsum")
    assert tb.output_shape(inv, x) == tb.output_shape(conv, x)


def test_declared_output_shape_equals_conv2d():
    for k in range(1, 8):
        for s in (1, 2, 3, 4):
            for size in [(16, 16), (15, 17), (7, 6), (1, 1), (33, 33), (None, 9)]:
                shape = (2, *size, 4)
                conv = keras.layers.Conv2D(4, k, strides=s, padding="same")
                inv = Involution(k, strides=s)
                assert inv.compute_output_shape(shape) == tuple(conv.compute_output_shape(shape))


def test_variable_resolution_model():
    inputs = keras.Input((None, None, 8))
    outputs = Involution(3, strides=2, groups=2)(inputs)
    assert tuple(outputs.shape) == (None, None, None, 8)
    model = keras.Model(inputs, outputs)
    rng = _rng("variable")
    for h, w in [(32, 32), (48, 40), (33, 17)]:
        y = model(rng.standard_normal((2, h, w, 8)).astype("float32"))
        assert tuple(y.shape) == (2, -(-h // 2), -(-w // 2), 8)


def test_return_kernel_in_functional_model():
    inputs = keras.Input((None, None, 4))
    out, kernel = Involution(3, groups=2, return_kernel=True)(inputs)
    assert tuple(kernel.shape) == (None, None, None, 2, 3, 3)
    model = keras.Model(inputs, [out, kernel])
    y, k = model(np.ones((1, 6, 5, 4), "float32"))
    assert tuple(k.shape) == (1, 6, 5, 2, 3, 3)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    rng = _rng(policy)
    x = rng.standard_normal((2, 10, 10, 8)).astype("float32")
    reference = Involution(3, strides=2, groups=2, reduction_ratio=2)
    reference.build(x.shape)
    weights = _random_weights(reference, rng)
    reference.set_weights(weights)
    expected = tb.to_numpy(reference(x))
    for name in IMPLEMENTATIONS:
        layer = Involution(3, strides=2, groups=2, reduction_ratio=2, implementation=name, dtype=policy)
        layer.build(x.shape)
        layer.set_weights(weights)
        assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in layer.weights)
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
        got = tb.to_numpy(keras.ops.cast(out, "float32"))
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 3e-2, name


def test_matches_keras_example_layout_for_one_group():
    """With G = 1 the layer computes what the Keras example's layer computes:
    patches by tf.image.extract_patches, kernel channel index = i * K + j."""
    if tb.NAME != "tensorflow":
        pytest.skip("the Keras example's layer is TensorFlow-only")
    import tensorflow as tf

    rng = _rng("example")
    x = rng.standard_normal((2, 9, 9, 3)).astype("float32")
    layer = Involution(3, strides=2, groups=1, reduction_ratio=2, implementation="shiftsum", return_kernel=True)
    out, kernel = layer(x)
    # The example's aggregation: (B, H, W, K*K, 1, G) kernel times
    # (B, H, W, K*K, C//G, G) patches, channel c at c // G, c % G.
    patches = tf.image.extract_patches(x, [1, 3, 3, 1], [1, 2, 2, 1], [1, 1, 1, 1], "SAME")
    patches = tf.reshape(patches, (2, 5, 5, 9, 3, 1))
    k = tf.reshape(kernel, (2, 5, 5, 9, 1, 1))
    example = tf.reshape(tf.reduce_sum(k * patches, axis=3), (2, 5, 5, 3))
    np.testing.assert_allclose(out.numpy(), example.numpy(), rtol=1e-5, atol=1e-5)


def test_config_round_trip():
    layer = Involution(5, strides=2, groups=4, reduction_ratio=2, implementation="shiftsum",
                       return_kernel=True, kernel_initializer="he_normal", name="inv")
    config = layer.get_config()
    for key in ("kernel_size", "strides", "groups", "reduction_ratio", "implementation",
                "return_kernel", "kernel_initializer", "bias_initializer", "data_format"):
        assert key in config
    clone = Involution.from_config(config)
    assert clone.get_config() == config


def test_save_and_reload_in_fresh_process(tmp_path):
    inputs = keras.Input((None, None, 8))
    x = Involution(3, strides=2, groups=2, reduction_ratio=2, name="inv_a")(inputs)
    outputs = Involution(5, groups=4, implementation="reference", name="inv_b")(x)
    model = keras.Model(inputs, outputs)
    rng = _rng("save")
    for layer in model.layers[1:]:
        layer.set_weights(_random_weights(layer, rng))
    data = rng.standard_normal((2, 12, 10, 8)).astype("float32")
    np.save(tmp_path / "input.npy", data)
    np.save(tmp_path / "expected.npy", tb.to_numpy(model(data)))
    model.save(tmp_path / "model.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import layers  # registers Involution
        model = keras.saving.load_model({str(tmp_path / "model.keras")!r})
        got = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "input.npy")!r})))
        np.testing.assert_array_equal(got, np.load({str(tmp_path / "expected.npy")!r}))
        print("identical")
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical" in result.stdout


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_size": 0}, "Received: kernel_size=0"),
        ({"kernel_size": -3}, "Received: kernel_size=-3"),
        ({"kernel_size": 2.5}, "Received: kernel_size=2.5"),
        ({"kernel_size": (3, 5)}, "Received: kernel_size=(3, 5)"),
        ({"kernel_size": 3, "strides": 0}, "Received: strides=0"),
        ({"kernel_size": 3, "groups": -1}, "Received: groups=-1"),
        ({"kernel_size": 3, "reduction_ratio": 0}, "Received: reduction_ratio=0"),
        ({"kernel_size": 3, "implementation": "fastest"}, "Received: implementation='fastest'"),
        ({"kernel_size": 3, "data_format": "channels_first"}, "Received: data_format='channels_first'"),
    ],
)
def test_bad_arguments_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Involution(**kwargs)


def test_implementation_of_another_backend_is_explained():
    other = next(n for n, impl in aggregation.IMPLEMENTATIONS.items() if tb.NAME not in impl.backends)
    with pytest.raises(ValueError, match=f"not available.*Received: implementation='{other}'"):
        Involution(3, implementation=other)


def test_an_implementation_missing_a_package_names_it(monkeypatch):
    """On every backend: an implementation registered with a package this
    machine lacks is refused with the package's name."""
    missing = aggregation.Implementation("needs_a_package", {tb.NAME: "shiftsum"}, "test entry",
                                         materialises_patches=False,
                                         requires={tb.NAME: ("no_such_package_for_involution",)})
    monkeypatch.setitem(aggregation.IMPLEMENTATIONS, missing.name, missing)
    assert missing.name not in Involution.implementations()
    with pytest.raises(ValueError, match=r"needs the Python package\(s\) no_such_package_for_involution\. "
                                         r".*implementation='needs_a_package'"):
        Involution(3, implementation=missing.name)


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((2, 8, 8, 16), {"groups": 3}, "Received: groups=3 for 16 input channels"),
        ((2, 8, 16), {}, "Received: input_shape=(2, 8, 16)"),
        ((2, 8, 8, 2, 16), {}, "Received: input_shape=(2, 8, 8, 2, 16)"),
    ],
)
def test_bad_shapes_at_build(shape, kwargs, message):
    layer = Involution(3, **kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layer.build(shape)


def test_wrong_rank_at_call_is_clear():
    with pytest.raises(ValueError, match="expected ndim=4|Received: input_shape"):
        Involution(3)(np.zeros((2, 8, 8), "float32"))


def test_auto_uses_a_registered_implementation():
    layer = Involution(3)
    x = tb.tensor(np.ones((1, 4, 4, 4), "float32"))
    for training in (False, True):
        assert layer.resolve_implementation(x, training) in Involution.implementations()
    assert Involution(3, implementation="shiftsum").resolve_implementation(x) == "shiftsum"


@pytest.mark.skipif(tb.NAME != "torch", reason="torch.compile's graphs exist on PyTorch only; tox's PyTorch run "
                                                "(`tox -e torch`) runs this test")
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", [*IMPLEMENTATIONS, "auto"])
def test_torch_compile_takes_the_whole_layer_as_one_graph(name, training):
    """No graph break inside the layer under torch.compile (docs/PERF.md,
    sections 29 and 30): the aggregation's module imported inside the compiled
    call left the rest of the layer uncompiled, Keras' tracked list of the
    batch norm's axes broke the training step into 9 graphs, and the Triton
    kernels behind `torch.compiler.disable` broke the graph inside the
    layer's profiler stage, so that the layer's own call ran uncompiled (in
    training Dynamo traced into Triton's interpreter and failed). Only the
    step's own `torch.autograd.grad` may break the graph; AOTAutograd takes
    the backward into the compiled graph, as TorchInductor does in a sweep.
    The fused kernels run in Triton's interpreter here, inside their custom
    operators."""
    import torch
    from torch._dynamo.utils import counters

    layer = Involution(7, strides=2, groups=2, implementation=name)
    x = torch.tensor(np.random.default_rng(0).standard_normal((2, 12, 12, 8)), dtype=torch.float32)
    layer.build(x.shape)
    weights = [v.value for v in layer.trainable_variables]

    def step():
        if not training:
            with torch.no_grad():
                return layer(x, training=False)
        return torch.autograd.grad(layer(x, training=True).sum(), weights)

    torch._dynamo.reset()
    counters.clear()
    torch.compile(step, backend="aot_eager")()
    inside = [reason.splitlines()[0] for reason in counters["graph_break"] if "autograd.grad" not in reason]
    assert counters["stats"]["unique_graphs"] == 1 and not inside, (dict(counters["stats"]), inside)


@pytest.mark.skipif(tb.NAME != "torch", reason="TorchInductor is PyTorch's; tox's PyTorch run (`tox -e torch`) runs "
                                                "this test")
def test_torch_inductor_trains_through_an_unevenly_padded_pooling():
    """A training step compiled by TorchInductor that differentiates the input
    at 9 px and stride 2, where "same" pooling pads one row and column: with
    Keras' own pooling, which pads by replication on PyTorch, TorchInductor's
    compiled backward failed in `replication_pad2d_backward` (docs/PERF.md,
    section 30); layers.pooling pads inside PyTorch's pooling instead."""
    import torch

    x = np.random.default_rng(0).standard_normal((2, 9, 9, 8)).astype("float32")
    layer = Involution(3, strides=2, groups=2, reduction_ratio=2, implementation="shiftsum")
    layer.build(x.shape)

    def input_gradient(call):
        t = torch.tensor(x, requires_grad=True)
        (call(t) ** 2).sum().backward()  # compiled: AOTAutograd's backward graph, by TorchInductor
        return t.grad  # (B, 9, 9, C)

    torch._dynamo.reset()
    compiled = torch.compile(lambda t: layer(t, training=True), backend="inductor")
    torch.testing.assert_close(input_gradient(compiled), input_gradient(lambda t: layer(t, training=True)),
                               rtol=1e-4, atol=1e-4)
