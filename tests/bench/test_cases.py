"""Cases and sweeps: ids, normalisation, dropped combinations, TOML files,
shards."""

from __future__ import annotations

import itertools

import pytest

from bench import sweeps
from bench.cases import Case, drop_reason
from bench.options import UsageError, parse_shard
from bench.session import shard_cases
from tests import backend as tb

BASE = dict(layer="involution", implementation="shiftsum", kernel_size=7, stride=2, groups=4, reduction_ratio=4,
            resolution=32, channels=64, batch=8, dtype="float32", mode="inference", jit=True)


def test_case_id_is_short_and_readable():
    assert Case(**BASE).id == "involution-shiftsum-k7s2g4r4-32px-c64-b8-f32-inf-jit"
    conv = Case(**BASE | {"layer": "conv2d", "implementation": "keras"}).normalised()
    assert conv.id == "conv2d-keras-k7s2-32px-c64-b8-f32-inf-jit"
    assert (conv.groups, conv.reduction_ratio) == (0, 0)
    model = Case(**BASE | {"layer": "seed_conv", "implementation": "keras", "dtype": "mixed_bfloat16",
                           "mode": "training", "jit": False}).normalised()
    assert model.id == "seed_conv-keras-32px-b8-mbf16-train-nojit"
    assert (model.kernel_size, model.channels, model.resolution) == (0, 3, 32)


def test_axes_are_the_dataclass_fields():
    assert Case.axes() == ("layer", "implementation", "kernel_size", "stride", "groups", "reduction_ratio",
                           "resolution", "channels", "batch", "dtype", "mode", "jit")


@pytest.mark.parametrize("changes, device, reason", [
    ({"implementation": "pallas"}, "cpu", "fused GPU kernel" if tb.NAME == "jax" else "runs on jax"),
    ({"implementation": "triton"}, "cpu", "fused GPU kernel" if tb.NAME != "tensorflow" else "runs on torch/jax"),
    ({"implementation": "triton_fused", "mode": "training"}, "cpu",
     "fused GPU kernel" if tb.NAME != "tensorflow" else "runs on torch/jax"),
    ({"groups": 3}, "cpu", "groups=3 does not divide channels=64"),
    ({"implementation": "fastest"}, "cpu", "unknown involution implementation"),
    ({"layer": "conv2d", "implementation": "shiftsum"}, "cpu", "only the implementation 'keras'"),
    ({"layer": "rednet26", "implementation": "auto", "resolution": 16}, "cpu", "needs at least 32 px"),
])
def test_drop_reasons(changes, device, reason):
    assert reason in drop_reason(Case(**BASE | changes), tb.NAME, device)


def test_training_cases_of_implementations_generating_from_the_bottleneck_are_kept():
    from layers import aggregation

    names = [name for name in aggregation.names(tb.NAME) if aggregation.get(name).trains_from_hidden]
    if not names:
        pytest.skip(f"{tb.NAME} has no implementation generating from the bottleneck "
                    "(Triton and Pallas kernels: PyTorch and JAX only)")
    for name in names:  # they train through their own kernels, not their trains_as implementation's
        assert drop_reason(Case(**BASE | {"implementation": name, "mode": "training"}), tb.NAME, "gpu") is None


def test_fused_kernels_run_on_a_gpu():
    fused = {"jax": "pallas", "torch": "triton"}.get(tb.NAME)
    if fused is None:
        pytest.skip("no fused kernel on tensorflow")
    assert drop_reason(Case(**BASE | {"implementation": fused}), tb.NAME, "gpu") is None


def test_builtin_sweeps_load_and_expand():
    assert set(sweeps.builtin_names()) >= {"smoke", "quick", "full", "paper", "models"}
    for name in sweeps.builtin_names():
        for device in ("cpu", "gpu"):
            cases = sweeps.load(name).cases(tb.NAME, device)
            assert cases and len({c.id for c in cases}) == len(cases)


def test_smoke_varies_every_axis():
    cases = sweeps.load("smoke").cases(tb.NAME, "cpu")
    for axis in Case.axes():
        assert len({getattr(c, axis) for c in cases}) >= 2, axis
    assert {c.layer for c in cases} >= {"involution", "conv2d", "depthwise", "seed_conv", "seed_involution"}


def test_quick_moves_five_axes_three_values_each():
    cases = sweeps.load("quick").cases(tb.NAME, "cpu")
    assert {c.mode for c in cases} == {"inference"}
    for layer, axes in [("involution", ("kernel_size", "stride", "groups", "reduction_ratio", "resolution")),
                        ("conv2d", ("kernel_size", "stride", "resolution")),
                        ("depthwise", ("kernel_size", "stride", "resolution"))]:
        for axis in axes:
            assert len({getattr(c, axis) for c in cases if c.layer == layer}) >= 3, (layer, axis)


def test_gpu_sweep_varies_every_axis_with_300_cases_per_backend():
    for backend in ("jax", "torch"):
        cases = sweeps.load("gpu").cases(backend, "gpu")
        assert len(cases) >= 300, (backend, len(cases))
        for axis in Case.axes():
            assert len({getattr(c, axis) for c in cases}) >= 2, (backend, axis)
        involution = [c for c in cases if c.layer == "involution"]
        # kernel size x groups together (the report's heat map)
        assert len({(c.kernel_size, c.groups) for c in involution}) >= 9
    assert sweeps.load("gpu").precision == 0.02


def test_paper_sweep_has_the_rednet_stages():
    cases = sweeps.load("paper").cases(tb.NAME, "gpu")
    stages = {(c.batch, c.resolution, c.channels, c.kernel_size, c.groups, c.reduction_ratio)
              for c in cases if c.layer == "involution"}
    assert {(64, 56, 64, 7, 4, 4), (64, 28, 128, 7, 8, 4), (64, 14, 256, 7, 16, 4)} <= stages


def test_models_sweep_is_smaller_on_cpu():
    cpu = {c.layer: c for c in sweeps.load("models").cases(tb.NAME, "cpu") if c.layer == "rednet50"}
    gpu = {c.layer: c for c in sweeps.load("models").cases(tb.NAME, "gpu") if c.layer == "rednet50"}
    assert (cpu["rednet50"].batch, cpu["rednet50"].resolution) == (2, 64)
    assert (gpu["rednet50"].batch, gpu["rednet50"].resolution) == (32, 224)


def test_star_expands_to_this_backends_implementations():
    cases = sweeps.load("smoke").cases(tb.NAME, "cpu")
    impls = {c.implementation for c in cases if c.layer == "involution"}
    from layers import aggregation

    assert impls >= {n for n, i in aggregation.IMPLEMENTATIONS.items() if tb.NAME in i.backends}


def test_jit_default_follows_keras():
    cases = sweeps.load("smoke").cases(tb.NAME, "cpu")
    base = next(c for c in cases if c.layer == "conv2d")
    assert base.jit == {"tensorflow": False, "jax": True, "torch": False}[tb.NAME]
    gpu = next(c for c in sweeps.load("smoke").cases(tb.NAME, "gpu") if c.layer == "conv2d")
    assert gpu.jit == (tb.NAME != "torch")


TOML_BASE = """
[defaults]
layer = "involution"
implementation = "shiftsum"
kernel_size = 3
stride = 1
groups = 1
reduction_ratio = 4
resolution = 8
channels = 4
batch = 1
dtype = "float32"
mode = "inference"
jit = false
"""


def test_toml_sweep_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('description = "mine"\ntime_per_case = 0.1\n' + TOML_BASE
                    + '[[grid]]\nkernel_size = [3, 5]\nlayer = ["involution", "conv2d"]\n')
    sweep = sweeps.load(str(path))
    assert sweep.name == "mine" and sweep.time_per_case == 0.1
    ids = [c.id for c in sweep.cases(tb.NAME, "cpu")]
    assert ids == sorted(ids) and len(ids) == 4


@pytest.mark.parametrize("extra, message", [
    ('[[grid]]\nkernal_size = [3]\n', "unknown axis 'kernal_size'"),
    ('[[grid]]\nkernel_size = ["three"]\n', "Received: kernel_size='three'"),
    ('[[grid]]\ndtype = "float64"\n', "Received: dtype='float64'"),
    ('[[grid]]\nlayer = "conv3d"\n', "Received: layer='conv3d'"),
    ('[[grid]]\njit = "sometimes"\n', "Received: jit='sometimes'"),
    ('[[grid]]\ncpu = 3\n', "cpu must be a table"),
    ('colour = "blue"\n', "unknown key(s) ['colour']"),
    ('precision = 2\n', "Received: precision=2"),
    ('time_per_case = -1\n', "Received: time_per_case=-1"),
])
def test_toml_errors_name_the_file_and_value(tmp_path, extra, message):
    path = tmp_path / "bad.toml"
    text = TOML_BASE + extra if extra.startswith("[[") else extra + TOML_BASE
    path.write_text(text)
    with pytest.raises(sweeps.SweepError) as info:
        sweeps.load(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_toml_missing_defaults_and_syntax(tmp_path):
    path = tmp_path / "partial.toml"
    path.write_text('[defaults]\nlayer = "involution"\n')
    with pytest.raises(sweeps.SweepError, match="missing"):
        sweeps.load(str(path))
    path.write_text("[defaults\n")
    with pytest.raises(sweeps.SweepError, match="not valid TOML"):
        sweeps.load(str(path))
    with pytest.raises(sweeps.SweepError, match="Received: --sweep=nope"):
        sweeps.load("nope")


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_cases(count):
    cases = sweeps.load("quick").cases(tb.NAME, "cpu")
    parts = [shard_cases(cases, (i, count)) for i in range(count)]
    ids = [c.id for part in parts for c in part]
    assert sorted(ids) == sorted(c.id for c in cases)
    assert len(ids) == len(set(ids))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [shard_cases(list(reversed(cases)), (i, count)) for i in range(count)]


@pytest.mark.parametrize("text", ["2/2", "a/b", "1/0", "-1/3", "3"])
def test_bad_shard(text):
    with pytest.raises(UsageError, match=f"Received: --shard={text}"):
        parse_shard(text)


def test_ids_are_unique_across_all_builtin_sweeps():
    all_cases = itertools.chain.from_iterable(sweeps.load(n).cases(tb.NAME, "gpu") for n in sweeps.builtin_names())
    by_id = {}
    for case in all_cases:
        assert by_id.setdefault(case.id, case) == case
