"""Cases: ids, axes, dropped combinations."""

from __future__ import annotations

import itertools

import pytest

from bench import sweeps
from bench.cases import Case, drop_reason
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


def test_ids_are_unique_across_all_builtin_sweeps():
    all_cases = itertools.chain.from_iterable(sweeps.load(n).cases(tb.NAME, "gpu") for n in sweeps.builtin_names())
    by_id = {}
    for case in all_cases:
        assert by_id.setdefault(case.id, case) == case
