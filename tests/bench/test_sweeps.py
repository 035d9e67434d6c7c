"""Sweeps (`bench.sweeps`): the built-in ones and what each varies, TOML
files and their errors."""

from __future__ import annotations

import pytest

from bench import sweeps
from bench.cases import Case
from tests import backend as tb


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
    ('[[grid]]\nimplementation = "shiftsun"\n', "Received: implementation='shiftsun'"),  # a typo: not a skip
    ('[[grid]]\nchannels = []\n', "channels is an empty list; give one value or more. Received: channels=[]"),
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
