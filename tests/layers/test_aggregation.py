"""Every aggregation implementation against the float64 NumPy reference,
forward and gradients, on random inputs."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from layers import aggregation
from layers.aggregation._common import Geometry, padded_input, padded_windows
from tests import backend as tb
from tests import numpy_reference as npref

# (batch, height, width, channels, kernel_size, stride, groups): every K in
# {1, 2, 3, 4, 5, 7}, strides 1-3, odd and even sizes, batch 1 and 2, one to
# four groups, windows larger than the input, and a group of more than 64
# channels (two channel blocks of the Triton kernels).
GEOMETRIES = [
    (1, 7, 7, 4, 1, 1, 1),
    (2, 8, 8, 4, 1, 2, 2),
    (1, 5, 5, 4, 4, 1, 1),
    (1, 6, 6, 4, 2, 2, 2),
    (2, 9, 8, 8, 3, 1, 2),
    (1, 8, 8, 6, 3, 2, 3),
    (2, 7, 9, 4, 3, 3, 1),
    (1, 10, 10, 8, 5, 1, 4),
    (2, 9, 9, 6, 5, 2, 2),
    (1, 12, 11, 4, 5, 3, 4),
    (1, 9, 9, 16, 7, 1, 1),
    (2, 8, 8, 8, 7, 2, 2),
    (1, 13, 13, 4, 7, 3, 1),
    (2, 4, 4, 4, 7, 1, 2),
    (1, 7, 6, 4, 4, 2, 1),
    (1, 5, 6, 80, 3, 2, 1),
]
# An implementation generating its kernel on chip aggregates with another's
# kernel (`trains_as`), tested under that name; tests/layers/test_involution.py
# checks its generation.
IMPLEMENTATIONS = [name for name in aggregation.names() if not aggregation.get(name).generates]


def _ids(g):
    return "b{}-{}x{}-c{}-k{}-s{}-g{}".format(*g)


def _case_ids(value):
    """Test ids of (implementation, geometry) pairs, geometries with or without a reduction."""
    if isinstance(value, str):
        return value
    return ("b{}-{}x{}-c{}-k{}-s{}-g{}" + "-r{}" * (len(value) - 7)).format(*value)


def _rel_err(actual, expected):
    actual = np.asarray(actual, np.float64)
    assert np.isfinite(actual).all(), "non-finite values: an output element was not written"
    return np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)


def _random_case(geometry, *salt):
    b, h, w, c, k, s, g = geometry
    rng = np.random.default_rng(zlib.crc32(repr((geometry, salt)).encode()))
    ho, wo = -(-h // s), -(-w // s)
    x = rng.standard_normal((b, h, w, c)).astype("float32")
    kernel = rng.standard_normal((b, ho, wo, g * k * k)).astype("float32")
    dy = rng.standard_normal((b, ho, wo, c)).astype("float32")
    return x, kernel, dy


def test_registry_lists_backend_implementations():
    expected = {
        "tensorflow": {"reference", "shiftsum", "xla"},
        "jax": {"reference", "shiftsum", "pallas", "pallas_fused", "triton", "triton_fused"},
        "torch": {"reference", "shiftsum", "unfold", "triton", "triton_fused"},
    }[tb.NAME]
    assert set(aggregation.names()) == expected
    assert any(not aggregation.get(n).materialises_patches for n in IMPLEMENTATIONS)
    for name in set(aggregation.names()) - set(IMPLEMENTATIONS):
        spec = aggregation.get(name)
        # the kernel it trains with is that implementation's, the one tested here
        assert spec.trains_as in IMPLEMENTATIONS
        assert spec.function() is aggregation.get(spec.trains_as).function()


def test_one_geometry_for_every_fused_kernel():
    geo = Geometry.of((2, 9, 8, 12), 5, 2, 3)
    assert (geo.out_height, geo.out_width, geo.pad_top, geo.pad_left) == (5, 4, 2, 1)  # as Conv2D "same"
    assert (geo.group_channels, geo.block_c, geo.channel_blocks, geo.block_p) == (4, 4, 1, 128)
    assert (geo.in_pixels, geo.out_pixels, geo.generated_channels) == (144, 40, 75)
    assert geo.phase_pixels == 2 * 5 * 4  # one stride phase of the input: ceil(9/2) x ceil(8/2) a batch item
    wide = Geometry.of((1, 4, 4, 256), 3, 1, 1)  # a 256-channel group: four blocks of 64
    assert (wide.block_c, wide.channel_blocks, wide.block_p) == (64, 4, 64)
    assert Geometry.of((2, 9, 8, 12), 5, 2, 3) is geo  # computed once per call shape


@pytest.mark.parametrize("name, geometry", tb.implementation_cases(IMPLEMENTATIONS, GEOMETRIES), ids=_case_ids)
def test_forward_matches_numpy(name, geometry):
    b, h, w, c, k, s, g = geometry
    x, kernel, _ = _random_case(geometry, name, "forward")
    fn = aggregation.get(name).function()
    out = tb.call(lambda a, kk: fn(a, kk, k, s, g), x, kernel)
    expected = npref.aggregate(x, kernel, k, s, g)
    assert out.shape == expected.shape
    assert _rel_err(out, expected) < 1e-5


# Every stride with odd and even K (the input gradient runs by stride phase),
# a stride larger than K (a phase that no tap reads), and the 80-channel group.
GRADIENT_GEOMETRIES = GEOMETRIES[::2] + [GEOMETRIES[1], GEOMETRIES[3], GEOMETRIES[13], GEOMETRIES[15]]


@pytest.mark.parametrize("name, geometry", tb.implementation_cases(IMPLEMENTATIONS, GRADIENT_GEOMETRIES),
                         ids=_case_ids)
def test_gradients_match_numpy(name, geometry):
    b, h, w, c, k, s, g = geometry
    x, kernel, dy = _random_case(geometry, name, "gradients")
    fn = aggregation.get(name).function()
    dx, dk = tb.grads(lambda a, kk: fn(a, kk, k, s, g), [x, kernel], dy)
    dx_ref, dk_ref = npref.aggregate_grads(x, kernel, dy, k, s, g)
    assert _rel_err(dx, dx_ref) < 1e-5
    assert _rel_err(dk, dk_ref) < 1e-5


@pytest.mark.skipif("triton" not in IMPLEMENTATIONS, reason=tb.NO_FUSED_KERNELS)
def test_kernel_gradient_of_a_wide_group_is_rounded_once_in_bfloat16():
    """The Triton kernel gradient of a group of more than 64 channels is
    summed over channel blocks in memory; in bfloat16 that sum is kept in
    float32 and rounded once, so it equals the float32 gradient of the same
    (bfloat16-exact) inputs rounded to bfloat16, element for element."""
    from keras import ops

    geometry = GEOMETRIES[15]  # an 80-channel group: two channel blocks
    b, h, w, c, k, s, g = geometry
    fn = aggregation.get("triton").function()
    x, kernel, dy = (tb.to_numpy(ops.cast(tb.tensor(a, "bfloat16"), "float32"))
                     for a in _random_case(geometry, "wide bfloat16"))
    _, dk32 = tb.grads(lambda a, kk: fn(a, kk, k, s, g), [x, kernel], dy)
    _, dk16 = tb.grads(lambda a, kk: fn(ops.cast(a, "bfloat16"), ops.cast(kk, "bfloat16"), k, s, g),
                       [x, kernel], dy)
    expected = tb.to_numpy(ops.cast(ops.cast(tb.tensor(dk32), "bfloat16"), "float32"))
    np.testing.assert_array_equal(dk16, expected)


ONLY_TENSORFLOW_GRAPHS = pytest.mark.skipif(
    tb.NAME != "tensorflow", reason="TensorFlow's stride-phase windows: JAX and PyTorch slice with a step")
STRIDED = [geometry for geometry in GEOMETRIES if geometry[5] > 1]


def _graph_of_any_size(k: int, s: int, g: int, c: int, gradients: bool = False):
    """`shiftsum` in a TensorFlow graph built for any batch, height and width,
    as in a Keras model on `keras.Input((None, None, C))`: the windows are
    cut with sizes known only when it runs."""
    import tensorflow as tf

    def run(x, kernel, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = aggregation.get("shiftsum").function()(x, kernel, k, s, g)
        return (y, *tape.gradient(y, [x, kernel], output_gradients=dy)) if gradients else (y,)

    return tf.function(run, input_signature=[tf.TensorSpec([None, None, None, c]),
                                             tf.TensorSpec([None, None, None, g * k * k]),
                                             tf.TensorSpec([None, None, None, c])])


@ONLY_TENSORFLOW_GRAPHS
@pytest.mark.parametrize("geometry", STRIDED, ids=_ids)
def test_sizes_known_only_at_run_time_match_numpy(geometry):
    b, h, w, c, k, s, g = geometry
    x, kernel, dy = _random_case(geometry, "sizes at run time")
    y, dx, dk = (t.numpy() for t in _graph_of_any_size(k, s, g, c, gradients=True)(x, kernel, dy))
    dx_ref, dk_ref = npref.aggregate_grads(x, kernel, dy, k, s, g)
    assert _rel_err(y, npref.aggregate(x, kernel, k, s, g)) < 1e-5
    assert _rel_err(dx, dx_ref) < 1e-5
    assert _rel_err(dk, dk_ref) < 1e-5


@ONLY_TENSORFLOW_GRAPHS
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_tensorflow_windows_are_slices_without_a_step(stride):
    """TensorFlow's slices with a step are its slow kernel (docs/PERF.md,
    section 25): with a stride, the windows come from the stride phases."""
    import tensorflow as tf

    graph = _graph_of_any_size(7, stride, 4, 16).get_concrete_function().graph
    slices = [op for op in graph.get_operations() if op.type == "StridedSlice"]
    steps = {int(v) for op in slices for v in tf.get_static_value(op.inputs[3])}
    assert len(slices) >= 49 and steps == {1}
    assert any(op.type == "Transpose" for op in graph.get_operations()) == (stride > 1)


@ONLY_TENSORFLOW_GRAPHS
@pytest.mark.parametrize("stride", [1, 2])
def test_tensorflow_gradient_of_shiftsum_gathers(stride):
    """`shiftsum`'s gradient is its own (docs/PERF.md, section 26): no
    window's gradient scattered into a zero tensor of the input's size
    (`StridedSliceGrad`, 49 before), and its windows plain slices too."""
    import tensorflow as tf

    graph = _graph_of_any_size(7, stride, 4, 16, gradients=True).get_concrete_function().graph
    scatters = [op for op in graph.get_operations() if op.type == "StridedSliceGrad"]
    assert len(scatters) <= 1  # the padding's crop to the windows' span, for sizes known at run time
    slices = [op for op in graph.get_operations() if op.type == "StridedSlice"]
    assert {int(v) for op in slices for v in tf.get_static_value(op.inputs[3])} == {1}


@pytest.mark.parametrize("geometry", [g for g in GEOMETRIES if g[4] > 1], ids=_ids)
def test_windows_split_into_groups_are_the_windows_reshaped(geometry):
    """`padded_windows(..., groups)` splits the channels once (docs/PERF.md,
    section 29): each of its K*K windows equals the plain window reshaped
    to (B, Ho, Wo, G, C/G), stride phases (TensorFlow) included."""
    from keras import ops

    b, h, w, c, k, s, g = geometry
    taps = [(i, j) for i in range(k) for j in range(k)]

    def windows(x):  # one program on JAX (`tb.call`), not 2*K*K eager ops compiled one by one
        xp, ho, wo = padded_input(x, k, s)
        plain, grouped = padded_windows(xp, ho, wo, k, s), padded_windows(xp, ho, wo, k, s, g)
        expected = ops.stack([ops.reshape(plain(i, j), (b, ho, wo, g, c // g)) for i, j in taps])
        return ops.stack([expected, ops.stack([grouped(i, j) for i, j in taps])])  # (2, K*K, B, Ho, Wo, G, C/G)

    expected, got = tb.call(windows, _random_case(geometry, "windows")[0])
    np.testing.assert_array_equal(got, expected)


PORTABLE = [name for name in IMPLEMENTATIONS if not aggregation.get(name).fused]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", PORTABLE)
def test_half_precision_gradients_close_to_float64(name, dtype):
    """The portable implementations' gradients in half precision (the fused
    kernels' have tests of their own), every stride phase: `shiftsum` writes
    its own gradient on TensorFlow and JAX."""
    from keras import ops

    geometry = (2, 9, 8, 8, 3, 2, 2)
    b, h, w, c, k, s, g = geometry
    x, kernel, dy = _random_case(geometry, name, dtype, "gradients")
    fn = aggregation.get(name).function()
    dx, dk = tb.grads(lambda a, kk: fn(ops.cast(a, dtype), ops.cast(kk, dtype), k, s, g), [x, kernel], dy)
    dx_ref, dk_ref = npref.aggregate_grads(x, kernel, dy, k, s, g)
    assert _rel_err(dx, dx_ref) < 2e-2
    assert _rel_err(dk, dk_ref) < 2e-2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_half_precision_close_to_float64(name, dtype):
    from keras.backend import standardize_dtype

    geometry = (2, 9, 9, 8, 3, 2, 2)
    b, h, w, c, k, s, g = geometry
    x, kernel, _ = _random_case(geometry, name, dtype)
    fn = aggregation.get(name).function()
    out = fn(tb.tensor(x, dtype), tb.tensor(kernel, dtype), k, s, g)
    assert standardize_dtype(out.dtype) == dtype
    out = tb.to_numpy(tb.tensor(out, "float32"))
    # Inputs rounded to 8 (bf16) or 11 (fp16) bits: errors of a few 1e-3.
    assert _rel_err(out, npref.aggregate(x, kernel, k, s, g)) < 2e-2


def test_padding_matches_keras_depthwise_conv():
    """With the same kernel at every pixel, involution is a depthwise
    convolution: the windows and padding must be those of Keras' own layer."""
    import keras

    rng = np.random.default_rng(11)
    for (b, h, w, c, k, s, g) in [(1, 6, 7, 4, 2, 2, 2), (2, 9, 8, 4, 4, 3, 1), (1, 8, 8, 4, 3, 2, 4)]:
        x = rng.standard_normal((b, h, w, c)).astype("float32")
        taps = rng.standard_normal((g, k, k)).astype("float32")
        ho, wo = -(-h // s), -(-w // s)
        kernel = np.broadcast_to(taps.reshape(1, 1, 1, g * k * k), (b, ho, wo, g * k * k)).copy()
        conv = keras.layers.DepthwiseConv2D(k, strides=s, padding="same", use_bias=False)
        conv.build(x.shape)
        dw = np.stack([taps[ch // (c // g)] for ch in range(c)], axis=-1)[..., None]  # (K, K, C, 1)
        conv.set_weights([dw])
        expected = tb.to_numpy(conv(x))
        for name in IMPLEMENTATIONS:
            function = aggregation.get(name).function()
            out = tb.call(lambda x_, kernel_: function(x_, kernel_, k, s, g), x, kernel)  # noqa: B023 (called here)
            np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5, err_msg=name)


# Implementations whose kernel makes the weights from the bottleneck in
# training (`aggregate_hidden`): odd sizes, strides 1-3, groups of 1 to 64
# channels, reduced widths 1 to 6 (b, h, w, c, k, s, g, r = C // reduction).
HIDDEN = [name for name in aggregation.names() if aggregation.get(name).trains_from_hidden]
# (..., reduced): strides 1-3, odd and even K, and a group of two channel blocks.
HIDDEN_GEOMETRIES = [(2, 7, 7, 3, 3, 3, 1, 1), (1, 6, 7, 64, 3, 1, 1, 4), (1, 9, 8, 12, 5, 2, 3, 6),
                     (1, 7, 6, 4, 4, 2, 1, 2), (1, 5, 6, 80, 3, 2, 1, 8)]


def _hidden_case(geometry, *salt):
    b, h, w, c, k, s, g, r = geometry
    rng = np.random.default_rng(zlib.crc32(repr((geometry, *salt)).encode()))
    ho, wo = -(-h // s), -(-w // s)
    x = rng.standard_normal((b, h, w, c)).astype("float32")
    hidden = np.maximum(rng.standard_normal((b, ho, wo, r)), 0.0).astype("float32")  # after the ReLU
    w_span = (rng.standard_normal((r, g * k * k)) * 0.5).astype("float32")
    b_span = (rng.standard_normal((g * k * k,)) * 0.5).astype("float32")
    dy = rng.standard_normal((b, ho, wo, c)).astype("float32")
    return x, hidden, w_span, b_span, dy


def _hidden_reference(x, hidden, w_span, b_span, dy, k, s, g):
    """Output and gradients (x, hidden, span kernel, span bias) in float64,
    through the kernel the NumPy reference aggregates."""
    hidden = hidden.astype(np.float64)
    w_span = w_span.astype(np.float64)
    kernel = hidden @ w_span + b_span  # (B, Ho, Wo, G*K*K)
    dx, d_kernel = npref.aggregate_grads(x, kernel, dy, k, s, g)
    return (npref.aggregate(x, kernel, k, s, g), dx, d_kernel @ w_span.T,
            np.einsum("bhwr,bhwt->rt", hidden, d_kernel), d_kernel.sum(axis=(0, 1, 2)))


@pytest.mark.skipif(not HIDDEN, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("name, geometry", tb.implementation_cases(HIDDEN, HIDDEN_GEOMETRIES), ids=_case_ids)
def test_generation_from_the_bottleneck_matches_numpy(name, geometry):
    """Forward and every gradient of the training path that never stores the kernel."""
    b, h, w, c, k, s, g, r = geometry
    x, hidden, w_span, b_span, dy = _hidden_case(geometry, name)
    fn = aggregation.get(name).hidden_function()
    out = tb.call(lambda *a: fn(*a, k, s, g), x, hidden, w_span, b_span)
    got = tb.grads(lambda *a: fn(*a, k, s, g), [x, hidden, w_span, b_span], dy)
    expected = _hidden_reference(x, hidden, w_span, b_span, dy, k, s, g)
    assert out.shape == expected[0].shape
    for what, actual, want in zip(("out", "dx", "d_hidden", "d_span_kernel", "d_span_bias"), [out, *got], expected,
                                  strict=True):
        assert _rel_err(actual, want) < 1e-5, what


@pytest.mark.skipif(not HIDDEN, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("name", HIDDEN)
def test_generation_from_the_bottleneck_in_bfloat16(name):
    """bfloat16 input and bottleneck, float32 span weights: float32 inside."""
    from keras.backend import standardize_dtype

    geometry = (2, 9, 9, 8, 3, 2, 2, 4)
    b, h, w, c, k, s, g, r = geometry
    x, hidden, w_span, b_span, dy = _hidden_case(geometry, name, "bfloat16")
    fn = aggregation.get(name).hidden_function()
    out = fn(tb.tensor(x, "bfloat16"), tb.tensor(hidden, "bfloat16"), tb.tensor(w_span), tb.tensor(b_span), k, s, g)
    assert standardize_dtype(out.dtype) == "bfloat16"
    expected = _hidden_reference(x, hidden, w_span, b_span, dy, k, s, g)[0]
    assert _rel_err(tb.to_numpy(tb.tensor(out, "float32")), expected) < 2e-2


FUSED = [name for name in IMPLEMENTATIONS if aggregation.get(name).fused]


def _check_forward_and_gradients(name, geometry, salt):
    """Output and gradients of implementation `name` against float64 NumPy:
    the aggregation of a given kernel, or for an implementation generating
    from the bottleneck (`HIDDEN`, geometry with its width R) the whole path
    from the hidden tensor."""
    k, s, g = geometry[4:7]
    if name in HIDDEN:
        x, hidden, w_span, b_span, dy = _hidden_case(geometry, name, salt)
        fn = aggregation.get(name).hidden_function()
        inputs = [x, hidden, w_span, b_span]
        expected = _hidden_reference(x, hidden, w_span, b_span, dy, k, s, g)
    else:
        x, kernel, dy = _random_case(geometry, name, salt)
        fn = aggregation.get(name).function()
        inputs = [x, kernel]
        expected = (npref.aggregate(x, kernel, k, s, g), *npref.aggregate_grads(x, kernel, dy, k, s, g))
    out = tb.call(lambda *a: fn(*a, k, s, g), *inputs)
    got = tb.grads(lambda *a: fn(*a, k, s, g), inputs, dy)
    for actual, want in zip([out, *got], expected, strict=True):
        assert _rel_err(actual, want) < 1e-5


@pytest.mark.skipif(not FUSED, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("name", FUSED + HIDDEN)
def test_the_whole_window_unrolled_matches_numpy(name, set_switch):
    """INVOLUTION_UNROLL_WINDOW=1 (every tap unrolled, as up to version v4,
    kept for timing against the row loop on a GPU) computes the same thing."""
    set_switch("INVOLUTION_UNROLL_WINDOW", "1")
    # for HIDDEN, the cheapest geometry in the interpreter
    _check_forward_and_gradients(name, HIDDEN_GEOMETRIES[0] if name in HIDDEN else (1, 9, 9, 6, 5, 2, 2), "window")


TRITON = [name for name in ("triton", "triton_fused") if name in aggregation.names()]


@pytest.mark.skipif(not TRITON, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("width, stride", [(4, 2), (32, 2), (8, 1)])
@pytest.mark.parametrize("name", TRITON)
def test_two_dimensional_tiles_match_numpy(name, width, stride, set_switch):
    """INVOLUTION_TILE_WIDTH=N (2-D pixel tiles, kept for timing against the
    flat ones on a GPU) computes the same thing, forward and gradients. The
    interpreter's tiles are 128 pixels: at stride 2, 4 wide cuts the output's
    6 columns (and each phase's 6 input columns) into two tiles across, 32
    wide (4 high) its 5 rows into two tiles down; at stride 1, 8 wide cuts
    the 11 columns into two."""
    set_switch("INVOLUTION_TILE_WIDTH", str(width))
    geometry = (2, 9, 11, 4, 3, stride, 1)
    _check_forward_and_gradients(name, geometry + (2,) if name in HIDDEN else geometry, "tiles")


@pytest.mark.skipif(not TRITON, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("value", ["3", "64", "wide"])
def test_a_bad_tile_width_is_refused_in_one_line(value, set_switch):
    from layers.aggregation import triton_kernels

    set_switch("INVOLUTION_TILE_WIDTH", value)
    with pytest.raises(ValueError, match=rf"^INVOLUTION_TILE_WIDTH .* Received: INVOLUTION_TILE_WIDTH='{value}'$"):
        triton_kernels.tile_width()


@pytest.mark.parametrize("value", ["yes", "2", ""])
def test_a_bad_unroll_switch_is_refused_in_one_line(value, set_switch):
    """Only 0 and 1 are read: "yes" must not mean no silently."""
    from layers.aggregation._common import rows_per_step

    set_switch("INVOLUTION_UNROLL_WINDOW", value)
    with pytest.raises(ValueError, match=rf"^INVOLUTION_UNROLL_WINDOW .* Received: \w+='{value}'$"):
        rows_per_step(7)
    set_switch("INVOLUTION_UNROLL_WINDOW", "1")
    assert rows_per_step(7) == 7
    set_switch("INVOLUTION_UNROLL_WINDOW", None)
    assert rows_per_step(7) == 1


def test_the_switches_are_read_once_a_process(set_switch, monkeypatch):
    """What a run records (`aggregation.kernel_switches`) stays what its
    kernels are built with, whatever the environment says later."""
    from layers.aggregation._common import rows_per_step

    set_switch("INVOLUTION_UNROLL_WINDOW", "1")
    assert rows_per_step(7) == 7
    monkeypatch.setenv("INVOLUTION_UNROLL_WINDOW", "0")
    assert rows_per_step(7) == 7
    assert aggregation.kernel_switches().get("INVOLUTION_UNROLL_WINDOW", 1) == 1  # TensorFlow: none


@pytest.mark.skipif(not TRITON, reason=tb.NO_FUSED_KERNELS)
@pytest.mark.parametrize("triton_version, numpy_version, refused", [
    ("3.6.0", "2.4.0", True), ("3.6.0", "2.3.5", False), ("3.7.0", "2.4.6", False)])
def test_tritons_interpreter_is_refused_with_a_numpy_it_cannot_run_with(triton_version, numpy_version, refused,
                                                                      monkeypatch):
    """Triton 3.6's interpreter and NumPy 2.4 fail at the first loop with a
    runtime bound, deep in the interpreter: one line says so instead."""
    import numpy
    import triton

    from layers.aggregation import triton_kernels

    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(numpy, "__version__", numpy_version)
    if not refused:
        triton_kernels.check_interpreter()
        return
    with pytest.raises(RuntimeError, match=rf"^Triton {triton_version}'s interpreter, .* install numpy<2.4 or "
                                           rf"triton>=3.7. Received: triton=={triton_version}, "
                                           rf"numpy=={numpy_version}$"):
        triton_kernels.check_interpreter()


@pytest.mark.skipif(not TRITON, reason=tb.NO_FUSED_KERNELS)
def test_the_autotuners_choices_are_read_by_kernel_and_key():
    """What a sweep records per case (`bench.session.tiles_tuned`): the
    compiled kernels' Autotuners exist without a GPU; a choice is put in one
    as Triton's autotuner stores it."""
    from layers.aggregation import triton_kernels

    forward = triton_kernels.compiled(False).forward
    key = (3136, 64, 16, 7, 1, "torch.float32")
    forward.cache[key] = triton_kernels._CONFIGS[1]
    try:
        config = triton_kernels._CONFIGS[1]
        assert triton_kernels.autotuner_choices()[("_fwd_kernel", key)] == \
            f"{config.kwargs['BLOCK_P']}x{config.num_warps}"
    finally:
        del forward.cache[key]
    assert ("_fwd_kernel", key) not in triton_kernels.autotuner_choices()
