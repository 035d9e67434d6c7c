"""Every table against numbers worked out by hand from run_base (see
fixtures/make_fixtures.py)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports import load, tables


@pytest.fixture
def table(fixtures):
    return load.load_runs([fixtures / "run_base"]).table


def test_kernel_size_view(table):
    frame = tables.axis_table(table, "kernel_size")
    assert sorted(frame["kernel_size"].unique()) == [3, 5, 7]
    assert len(frame) == 12  # 4 series x 3 kernel sizes, all at stride 1, groups 4
    shiftsum = frame[frame["series"] == "involution/shiftsum"].set_index("kernel_size")
    assert shiftsum.loc[3, "time_vs_conv2d"] == pytest.approx(4 / 6)
    assert shiftsum.loc[7, "time_vs_conv2d"] == pytest.approx(35 / 25)
    assert shiftsum.loc[3, "memory_vs_conv2d"] == pytest.approx(10 / 20)
    pivot = tables.time_pivot(table, "kernel_size").set_index("kernel_size")
    assert list(pivot.columns)[:2] == ["involution/reference", "involution/shiftsum"]
    assert pivot.loc[5, "depthwise"] == pytest.approx(2.3)


def test_each_run_of_the_same_cases_is_compared_with_its_own_conv2d(fixtures, table):
    """run_new times run_base's cases again, Conv2D 0.5% slower: each run's
    involution against its own Conv2D, never the other run's."""
    both = load.load_runs([fixtures / "run_base", fixtures / "run_new"]).table
    pairs = tables.matched(both)
    assert len(pairs) == 2 * len(tables.matched(table))
    shiftsum_k7 = pairs[(pairs["implementation"] == "shiftsum") & (pairs["kernel_size"] == 7)
                        & (pairs["stride"] == 1) & (pairs["groups"] == 4)].set_index("variant")
    assert shiftsum_k7.loc["run_base", "time_ms_conv2d"] == pytest.approx(25.0)
    assert shiftsum_k7.loc["run_new", "time_ms_conv2d"] == pytest.approx(25.0 * 1.005)
    frame = tables.axis_table(both, "kernel_size").set_index(["series", "kernel_size"])
    assert frame.loc[("involution/shiftsum · run_new", 7), "time_vs_conv2d"] == pytest.approx(35 * 1.2 / (25 * 1.005))
    assert frame.loc[("involution/shiftsum · run_base", 7), "time_vs_conv2d"] == pytest.approx(35 / 25)


def test_axis_view_compares_within_each_precision_policy(fixtures, tmp_path):
    """One backend timed with TF32 allowed and without (the `paper` and `gpu`
    sweeps): each policy's involution against its own policy's Conv2D."""
    tf32 = tmp_path / "run_tf32"
    shutil.copytree(fixtures / "run_base", tf32)
    rows = [json.loads(line) for line in (tf32 / "results.jsonl").read_text().splitlines()]
    for row in rows:  # every time halved, Conv2D's a third
        row["tf32"] = True
        row["median_s"] *= 1 / 3 if row["layer"] == "conv2d" else 0.5
        row["rounds_s"] = [r * (1 / 3 if row["layer"] == "conv2d" else 0.5) for r in row.get("rounds_s") or []]
    (tf32 / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    both = load.load_runs([fixtures / "run_base", tf32]).table
    assert set(both["variant"]) == {""}  # two setups, not two runs of one
    frame = tables.axis_table(both, "kernel_size").set_index(["series", "kernel_size"])
    assert frame.loc[("involution/shiftsum", 7), "time_vs_conv2d"] == pytest.approx(35 / 25)
    assert frame.loc[("involution/shiftsum · TF32", 7), "time_vs_conv2d"] == pytest.approx(35 * 0.5 / (25 / 3))


def test_groups_view_repeats_the_baselines(table):
    frame = tables.axis_table(table, "groups")
    assert sorted(frame["groups"].unique()) == [1, 4]
    conv = frame[frame["series"] == "conv2d"]
    assert list(conv["time_ms"]) == [25.0, 25.0]
    ref = frame[(frame["series"] == "involution/reference")].set_index("groups")
    assert ref.loc[1, "time_vs_conv2d"] == pytest.approx(90 / 25)


def test_stride_view(table):
    pivot = tables.time_pivot(table, "stride").set_index("stride")
    assert pivot.loc[2, "conv2d"] == pytest.approx(6.5) and pivot.loc[2, "involution/shiftsum"] == pytest.approx(10)


def test_axes_without_two_values_have_no_view(table):
    for axis in ("resolution", "channels", "batch", "dtype", "mode", "reduction_ratio"):
        assert tables.axis_table(table, axis).empty


def test_jit_view(table):
    """The base case compiled as well (a sweep with `jit = [true, false]`):
    the compilation mode is a view of its own, each side against the Conv2D
    of the same mode."""
    base = table[(table["kernel_size"] == 7) & (table["stride"] == 1) & (table["groups"].isin([0, 4]))
                 & (table["reduction_ratio"].isin([0, 4])) & (table["resolution"] == 32)]
    compiled = base.assign(jit=True, case_id=base["case_id"].str.replace("nojit", "jit"),
                           time_ms=base["time_ms"] / np.where(base["layer"] == "involution", 5.0, 1.25))
    both = pd.concat([base, compiled], ignore_index=True)
    assert "jit" in tables.varying_axes(both)
    pivot = tables.time_pivot(both, "jit").set_index("jit")
    assert list(pivot.index) == [False, True]
    assert pivot.loc[True, "involution/shiftsum"] == pytest.approx(pivot.loc[False, "involution/shiftsum"] / 5)
    ratios = tables.axis_table(both, "jit")
    shiftsum = ratios[ratios["series"] == "involution/shiftsum"].set_index("jit")["time_vs_conv2d"]
    assert shiftsum[True] == pytest.approx(shiftsum[False] / 4)
    assert tables.axis_table(table, "jit").empty  # run_base: jit off only


def test_axes_that_vary_only_together(table):
    """Stages as in the `paper` sweep: resolution and channels move together,
    so neither has a one-axis view, and `varying_axes` names both."""
    base = table[(table["kernel_size"] == 7) & (table["stride"] == 1) & (table["groups"].isin([0, 4]))
                 & (table["reduction_ratio"].isin([0, 4]))]
    stages = pd.concat([base, base.assign(resolution=16, channels=128, case_id=base["case_id"] + "-stage2")],
                       ignore_index=True)
    assert all(tables.time_pivot(stages, axis).empty for axis in tables.AXES)
    assert tables.varying_axes(stages) == ["resolution", "channels"]
    assert tables.varying_axes(base) == []
    assert "kernel_size" in tables.varying_axes(table)


def test_wins(table):
    wins = tables.wins(table).set_index("series")
    assert wins.loc["involution/shiftsum", "cases"] == 5
    assert wins.loc["involution/shiftsum", "faster"] == 2
    assert wins.loc["involution/shiftsum", "lighter"] == 1
    assert wins.loc["involution/shiftsum", "median_time_vs_conv2d"] == pytest.approx(30 / 25)
    assert wins.loc["involution/shiftsum", "best_time_vs_conv2d"] == pytest.approx(1 / 1.5)
    assert wins.loc["involution/reference", "faster"] == 0
    best = tables.winning_cases(table)
    assert list(best["case_id"]) == ["involution-shiftsum-k3s1g4r4-32px-c64-b8-f32-inf-nojit",
                                     "involution-shiftsum-k5s1g4r4-32px-c64-b8-f32-inf-nojit"]


def test_best_implementation(table):
    best = tables.best_implementation(table).set_index("implementation")
    assert best.loc["shiftsum", "fastest_in"] == 5 and best.loc["shiftsum", "geomean_slowdown"] == 1.0
    expected = np.exp(np.mean(np.log([10 / 4, 45 / 12, 100 / 35, 30 / 10, 90 / 30])))
    assert best.loc["reference", "geomean_slowdown"] == pytest.approx(expected)
    assert best.loc["reference", "fastest_in"] == 0
    assert "variant" not in best  # one run per setup: no column for it


def test_best_implementation_per_run_of_the_same_cases(fixtures):
    both = load.load_runs([fixtures / "run_base", fixtures / "run_new"]).table
    best = tables.best_implementation(both)
    assert sorted(best["variant"].unique()) == ["run_base", "run_new"]
    assert (best.groupby("variant")["cases"].sum() == 10).all()  # 5 shiftsum and 5 reference cases each


def test_statuses_failures_models_profiles(table):
    assert tables.statuses(table)["cases"].sum() == 18
    assert tables.failures(table).empty
    assert tables.models(table).empty
    assert len(tables.profiled(table)) == 1


def test_each_involution_network_is_set_against_its_counterpart(fixtures, tmp_path):
    """RedNet-26 at 30 ms against ResNet-26 at 40 ms in each mode; a RedNet-50
    without its ResNet-50 has no pair; run_base's rows (layers, and no
    `counterpart` field) have none."""
    assert tables.model_pairs(load.load_runs([fixtures / "run_base"]).table).empty
    run = tmp_path / "run"
    shutil.copytree(fixtures / "run_base", run)
    template = json.loads((run / "results.jsonl").read_text().splitlines()[0])

    def model(layer: str, counterpart: str | None, ms: float, params: int, mode: str) -> dict:
        scale = ms / 1e3 / template["median_s"]
        return {**template, "case_id": f"{layer}-{mode}", "layer": layer, "kind": "model", "mode": mode,
                "counterpart": counterpart, "implementation": "auto" if counterpart else "keras",
                "implementation_resolved": "xla" if counterpart else "keras", "median_s": ms / 1e3,
                "median_ci_low_s": None, "median_ci_high_s": None,
                "rounds_s": [v * scale for v in template["rounds_s"]], "params": params, "macs": params * 10,
                "peak_memory_bytes": params * 4.0}

    rows = [model(layer, counterpart, ms, params, mode) for mode in ("inference", "training")
            for layer, counterpart, ms, params in (("rednet26", "resnet26", 30.0, 9_000_000),
                                                   ("resnet26", None, 40.0, 13_500_000),
                                                   ("rednet50", "resnet50", 50.0, 15_000_000))]
    with open(run / "results.jsonl", "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    pairs = tables.model_pairs(load.load_runs([run]).table)
    assert pairs[["layer", "counterpart", "mode"]].values.tolist() == [["rednet26", "resnet26", "inference"],
                                                                         ["rednet26", "resnet26", "training"]]
    assert pairs["time_ratio"].tolist() == pytest.approx([0.75, 0.75])
    assert (pairs["time_ratio_low"] < 0.75).all() and (pairs["time_ratio_high"] > 0.75).all()
    assert pairs["params_ratio"].tolist() == pytest.approx([9 / 13.5] * 2)
    assert pairs["memory_ratio"].tolist() == pytest.approx([9 / 13.5] * 2)
    assert pairs["macs_ratio"].tolist() == pytest.approx([9 / 13.5] * 2)
    # Two runs of the same cases: each network against its own run's counterpart, the runs named in `series`
    shutil.copytree(run, tmp_path / "again")
    both = tables.model_pairs(load.load_runs([run, tmp_path / "again"]).table)
    assert len(both) == 4 and both["time_ratio"].tolist() == pytest.approx([0.75] * 4)
    assert both["series"].nunique() == 2 and both["series"].str.contains("again").any()


def test_not_run_counts_each_reason_of_the_runs_once():
    runs = [{"backend": "jax", "device": "cpu", "sweep": "quick",
             "not_run": {"'pallas' is a fused GPU kernel": ["a", "b", "c"],
                         "groups=3 does not divide channels=64": ["d"]}},
            {"backend": "tensorflow", "device": "cpu", "sweep": "quick", "not_run": {}},
            {"backend": "torch", "device": "gpu"}]  # a run.json from before the field: nothing to list
    frame = tables.not_run(runs)
    assert frame.to_dict("records") == [
        {"backend": "jax", "device": "cpu", "sweep": "quick", "cases": 3, "runs": 1, "example": "a",
         "reason": "'pallas' is a fused GPU kernel"},
        {"backend": "jax", "device": "cpu", "sweep": "quick", "cases": 1, "runs": 1, "example": "d",
         "reason": "groups=3 does not divide channels=64"}]
    assert tables.not_run(runs[1:]).empty
    # The same sweep run again, and a shard that lists part of it: one row per reason, its cases counted once.
    again = [runs[0], runs[0], {**runs[0], "not_run": {"'pallas' is a fused GPU kernel": ["c", "e"]}}]
    assert tables.not_run(again).to_dict("records")[0] == {
        "backend": "jax", "device": "cpu", "sweep": "quick", "cases": 4, "runs": 3, "example": "a",
        "reason": "'pallas' is a fused GPU kernel"}


def test_time_ratio_intervals_of_runs_with_passes_rest_on_the_spread_between_processes(fixtures):
    pairs = tables.matched(load.load_runs([fixtures / "cmp_base"]).table).set_index("case_id")
    ratio, low, high = (pairs[f"time_vs_conv2d{end}"] for end in ("", "_low", "_high"))
    assert ((low <= ratio) & (ratio <= high)).all()
    pair = pairs.loc["involution-shiftsum-k7s1g4r4-32px-c64-b8-f32-inf-nojit"]
    # each side's log time: variance log(1.01)^2 / 4; Conv2D's with 4 degrees of freedom, shiftsum's with 5
    variance = math.log(1.01) ** 2 / 4
    freedom = (2 * variance) ** 2 / (variance ** 2 / 4 + variance ** 2 / 5)
    half = stats.t.ppf(0.975, freedom) * math.sqrt(2 * variance)
    assert pair["time_vs_conv2d"] == pytest.approx(35 / 25)
    assert (pair["time_vs_conv2d_low"], pair["time_vs_conv2d_high"]) == (
        pytest.approx(35 / 25 * math.exp(-half)), pytest.approx(35 / 25 * math.exp(half)))


def test_unstable_cases_are_judged_on_their_rounds_not_on_the_spread_between_processes(fixtures):
    table = load.load_runs([fixtures / "cmp_base"]).table
    index = table.index[table["case_id"] == "conv2d-keras-k7s1-32px-c64-b8-f32-inf-nojit"][0]
    table.loc[index, "stopped_by"] = "time"  # its rounds stopped at the time budget, ±10% precise
    table.loc[index, ["time_ms_rounds_ci_low", "time_ms_rounds_ci_high"]] = (0.9 * 25.125, 1.1 * 25.125)
    rows = tables.unstable(table)
    assert list(rows["case_id"]) == ["conv2d-keras-k7s1-32px-c64-b8-f32-inf-nojit"]
    assert rows["interval_half_width"].iloc[0] == pytest.approx(0.1)
    assert table.loc[index, "interval_basis"] == load.BETWEEN_PROCESSES  # its time's interval is another one


def test_the_report_says_what_its_intervals_rest_on(fixtures):
    passes = load.load_runs([fixtures / "cmp_base"]).table
    assert tables.interval_note(passes).startswith("95% intervals include the variation between processes")
    passes.loc[passes.index[0], "status"] = "error"  # a failed case has no interval to speak of
    assert tables.interval_note(passes).startswith("95% intervals include the variation between processes")
    one = load.load_runs([fixtures / "run_base"]).table
    assert tables.interval_note(one).startswith("95% intervals rest on the rounds of one process")
    both = load.load_runs([fixtures / "cmp_base", fixtures / "run_base"]).table
    assert tables.interval_note(both).startswith("95% intervals of series timed in several processes")
    spread = tables.process_spread(passes).set_index("series")
    assert spread.loc["conv2d", "spread_between_processes"] == pytest.approx(math.log(1.01) / math.sqrt(2))
    assert spread.loc["conv2d", "processes_per_case"] == 2 and tables.process_spread(one).empty


def test_axis_view_ratios_carry_their_interval_and_conv2d_none(fixtures):
    frame = tables.axis_table(load.load_runs([fixtures / "cmp_base"]).table, "kernel_size")
    conv = frame[frame["series"] == "conv2d"]
    assert (conv["time_vs_conv2d"] == 1).all() and (conv["time_vs_conv2d_ci"] == "–").all()
    row = frame[(frame["series"] == "involution/shiftsum") & (frame["kernel_size"] == 7)].iloc[0]
    pair = tables.matched(load.load_runs([fixtures / "cmp_base"]).table).set_index("case_id").loc[
        "involution-shiftsum-k7s1g4r4-32px-c64-b8-f32-inf-nojit"]
    # the same two cases, the same ratio and interval as the summary's pairs
    assert row["time_vs_conv2d"] == pytest.approx(pair["time_vs_conv2d"])
    assert row["time_vs_conv2d_ci"] == f"{pair['time_vs_conv2d_low']:.3g}–{pair['time_vs_conv2d_high']:.3g}"


def test_memory_methods_name_each_way_once_without_a_rows_readings():
    frame = pd.DataFrame({"peak_memory_mb": [1.0, 2.0, 3.0, None], "peak_memory_source": [
        "the larger of TensorFlow's CPU allocator peak (tf.config.experimental.get_memory_info: 2,097,152 B) "
        "and memray (allocations during one step: 190,001 B)",
        "the larger of TensorFlow's CPU allocator peak (tf.config.experimental.get_memory_info: 819,200 B) "
        "and memray (allocations during one step: 827,982 B)",
        "memray (allocations during one step, whole process, CPU)",
        "torch.cuda.max_memory_allocated"]})  # a row without a peak: its source is not a way used
    assert tables.memory_methods(frame) == [
        "memray (allocations during one step, whole process, CPU)",
        "the larger of TensorFlow's CPU allocator peak (tf.config.experimental.get_memory_info) and memray "
        "(allocations during one step)"]
    assert tables.memory_methods(frame.iloc[0:0]) == []


def test_run_costs_give_each_session_its_cases_elapsed_time_and_overhead(fixtures, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fixtures / "run_base", run)
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    # The first session (started 12:00:00) finished 3 cases by 12:00:30; the run, resumed at 12:10:00,
    # finished the other 15 by 12:11:40. Each case took 2 s, of which 0.5 s, 1.5 s, ... outside its rounds.
    for index, row in enumerate(rows):
        row.update(finished="20261122T120030Z" if index < 3 else "20261122T121140Z", wall_s=2.0,
                   overhead_s=0.5 + index)
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    meta = json.loads((run / "run.json").read_text())
    meta["sessions"] = [{"started": "20261122T120000Z"}, {"started": "20261122T121000Z"}]
    (run / "run.json").write_text(json.dumps(meta))
    loaded = load.load_runs([run])
    costs = tables.run_costs(loaded.costs, loaded.runs).set_index("session")
    assert costs["cases"].to_dict() == {1: 3, 2: 15} and costs["ok"].to_dict() == {1: 3, 2: 15}
    assert costs["elapsed_s"].to_dict() == {1: 30.0, 2: 100.0}
    assert costs.loc[1, "median_overhead_s"] == pytest.approx(1.5)
    assert costs.loc[1, "total_overhead_s"] == pytest.approx(0.5 + 1.5 + 2.5)
    assert costs.loc[1, "timed_rounds_s"] == pytest.approx(3 * 2.0 - (0.5 + 1.5 + 2.5))
    assert costs.loc[2, "median_overhead_s"] == pytest.approx(10.5)  # 3.5 ... 17.5
    # A run of one session (run.json without `sessions`: its own start), and rows from before the fields
    one = load.load_runs([fixtures / "run_base"])
    assert tables.run_costs(one.costs, one.runs)["cases"].tolist() == [18]
    old = one.costs.drop(columns=["finished"])
    assert tables.run_costs(old, one.runs).empty
