"""BenchSession's own rules, in process: the L2 option on a CPU, the
kernel switches, and the plausibility floor of a measured peak."""

from __future__ import annotations

import pytest

from bench import sweeps
from bench.cases import Case
from bench.options import UsageError
from bench.session import BenchSession, Options, memory_check, shard_cases, tiles_tuned
from tests import backend as tb
from tests.bench.conftest import ROOT


def test_cold_l2_needs_a_gpu(tmp_path):
    with pytest.raises(UsageError, match="Received: --l2=cold"):
        BenchSession(Options(sweep="smoke", run_dir=str(tmp_path / "run"), l2="cold"), ROOT)
    assert BenchSession(Options(sweep="smoke", run_dir=str(tmp_path / "run"), l2="warm"), ROOT).l2 == "warm"


def test_the_kernel_switches_are_read_once_and_recorded(tmp_path):
    session = BenchSession(Options(sweep="smoke", run_dir=str(tmp_path / "run")), ROOT)
    defaults = {"INVOLUTION_UNROLL_WINDOW": 0, "INVOLUTION_TILE_WIDTH": 0}
    assert session.kernel_switches == ({} if tb.NAME == "tensorflow" else defaults)  # TensorFlow: no fused kernel
    session.ensure_run_dir()
    assert session.run_dir.read_meta()["kernel_switches"] == session.kernel_switches


@pytest.mark.parametrize("variable, value", [("INVOLUTION_UNROLL_WINDOW", "on"), ("INVOLUTION_TILE_WIDTH", "6")])
def test_a_bad_kernel_switch_ends_the_run_before_its_first_case(variable, value, tmp_path, set_switch):
    """One line, before the run directory exists, not an error row per fused
    case. On TensorFlow, which runs no fused kernel, neither is read."""
    set_switch(variable, value)
    options = Options(sweep="smoke", run_dir=str(tmp_path / "run"))
    if tb.NAME == "tensorflow":
        assert BenchSession(options, ROOT).kernel_switches == {}
        return
    with pytest.raises(UsageError, match=rf"^{variable} .* Received: {variable}='{value}'$"):
        BenchSession(options, ROOT)
    assert not (tmp_path / "run" / "run.json").exists()


def _case(**changes) -> Case:
    base = dict(layer="conv2d", implementation="keras", kernel_size=3, stride=1, groups=0, reduction_ratio=0,
                resolution=56, channels=64, batch=8, dtype="float32", mode="inference", jit=False)
    return Case(**(base | changes))


def test_a_peak_below_the_steps_output_is_not_a_peak():
    case = _case()
    output = 8 * 56 * 56 * 64 * 4  # 6.4 MB
    row = {"peak_memory_bytes": 850_000, "peak_memory_source": "memray (test)", "trainable_params": 36928}
    fields = memory_check(case, (8, 56, 56, 64), row)
    assert fields["peak_memory_bytes"] is None and fields["peak_memory_valid"] is False
    assert fields["peak_memory_measured_bytes"] == 850_000 and fields["peak_memory_floor_bytes"] == output
    assert "850,000 B, less than the 6,422,528 B the step's own output take" in fields["peak_memory_invalid_reason"]
    ok = memory_check(case, (8, 56, 56, 64), row | {"peak_memory_bytes": 71_000_000})
    assert ok["peak_memory_valid"] is True and "peak_memory_bytes" not in ok  # the measured value stays


def test_training_floor_is_the_larger_of_the_output_and_the_gradients():
    """The gradients are returned together; the output may be gone by then."""
    case = _case(mode="training", dtype="mixed_bfloat16")
    row = {"peak_memory_bytes": 1, "trainable_params": 36928}
    floor = memory_check(case, (8, 56, 56, 64), row)["peak_memory_floor_bytes"]
    assert floor == 36928 * 4 + 2 * (8 * 56 * 56 * 64)  # the weights' (float32) and the input's gradients
    wide = memory_check(case, (8, 56, 56, 512), row)["peak_memory_floor_bytes"]  # an output wider than the input
    assert wide == 2 * (8 * 56 * 56 * 512)


def test_no_measurement_is_neither_valid_nor_invalid():
    fields = memory_check(_case(), (8, 56, 56, 64), {"peak_memory_bytes": None})
    assert fields["peak_memory_valid"] is None and fields["peak_memory_measured_bytes"] is None


class FakeBenchmark:
    """What BenchSession.run needs of pytest-benchmark's fixture."""

    enabled = True

    def __init__(self):
        self.extra_info: dict = {}
        self._mode = None
        self.rounds: list = []

    def _make_stats(self, iterations):
        return type("Stats", (), {"update": lambda _, value: self.rounds.append(value)})()


def _session(tmp_path, **options) -> BenchSession:
    session = BenchSession(Options(sweep="smoke", run_dir=str(tmp_path / "run"), report=False, **options), ROOT)
    session.ensure_run_dir()
    return session


def test_a_failing_counter_keeps_the_timing(tmp_path, monkeypatch):
    session = _session(tmp_path)

    def broken(step):
        raise RuntimeError("the allocator statistics are not available")

    monkeypatch.setattr(session.runner, "peak_memory", broken)
    row = session.run(_case(resolution=8, channels=4, batch=1), FakeBenchmark())
    assert row["status"] == "ok" and row["median_s"] > 0 and row["rounds"] >= 3
    assert row["peak_memory_bytes"] is None
    assert row["peak_memory_source"].startswith("failed: RuntimeError: the allocator statistics are not available")
    assert row["flops_measured_source"] and not row["flops_measured_source"].startswith("failed")


def test_auto_gets_the_figures_of_the_implementation_it_ran(tmp_path, monkeypatch):
    from layers import counting
    from layers.aggregation import auto
    from tests import backend as tb

    # auto made to pick the stacked patches, whose largest intermediate is not the fallback's.
    monkeypatch.setitem(auto.TABLE, (tb.NAME, "cpu", "training"), auto.Choice("reference", "this test"))
    session = _session(tmp_path)
    # Not compiled (jit False): what auto picks does not depend on it, and torch.compile of a training
    # step took 40 of this test's 46 s on PyTorch.
    case = Case("involution", "auto", 3, 1, 2, 2, 8, 8, 2, "float32", "training", False)
    row = session.run(case, FakeBenchmark())
    assert row["status"] == "ok", row["error"]
    assert row["implementation_resolved"] == "reference"

    def largest(name):
        return counting.layer_figures("involution", name, batch=2, resolution=8, channels=8, kernel_size=3, stride=1,
                                      groups=2, reduction_ratio=2, mode="training").largest_intermediate_bytes

    assert row["largest_intermediate_bytes"] == largest("reference") != largest(auto.FALLBACK.implementation)


def test_a_case_records_the_tiles_its_autotuning_chose():
    """Only the choices the case made: a geometry tuned by an earlier case
    is not its choice, so each choice appears once per process."""
    before = {("_fwd_kernel", (3136, 64)): "64x4"}
    after = {**before, ("_dx_kernel", (3136, 64)): "128x8", ("_dk_kernel", (3136, 64)): "32x2"}
    source = "Triton's autotuner, in this process"
    assert tiles_tuned(before, after, source) == {"triton_tiles_tuned": "_dk_kernel 32x2, _dx_kernel 128x8",
                                                  "triton_tiles_source": source}
    assert tiles_tuned(before, before, source)["triton_tiles_tuned"] == ""  # nothing new
    assert tiles_tuned(None, None, "none: a CPU run") == {"triton_tiles_tuned": None,
                                                          "triton_tiles_source": "none: a CPU run"}


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_cases(count):
    cases = sweeps.load("quick").cases(tb.NAME, "cpu")
    parts = [shard_cases(cases, (i, count)) for i in range(count)]
    ids = [c.id for part in parts for c in part]
    assert sorted(ids) == sorted(c.id for c in cases)
    assert len(ids) == len(set(ids))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [shard_cases(list(reversed(cases)), (i, count)) for i in range(count)]
