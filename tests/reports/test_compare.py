"""`reports compare`: verdicts from the rounds (rank test, interval) and
from the spread between processes (passes, --history), on fixture runs whose
numbers are known (fixtures/make_fixtures.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from reports import compare
from tests.reports.conftest import copy_run

SLOW = "involution-shiftsum-k7s1g4r4-32px-c64-b8-f32-inf-nojit"


def _verdicts(frame):
    return dict(zip(frame["case_id"], frame["verdict"], strict=True))


def test_a_real_20_percent_slowdown_is_slower(fixtures):
    frame, context = compare.compare(fixtures / "cmp_base", fixtures / "cmp_new", 0.05)
    verdicts = _verdicts(frame)
    assert verdicts.pop(SLOW) == "slower"
    assert set(verdicts.values()) == {"same"}
    row = frame.set_index("case_id").loc[SLOW]
    assert row["ratio"] == pytest.approx(1.2, rel=0.01) and row["p_value"] < 0.01
    assert 1.05 < row["between_low"] < 1.2 < row["between_high"] < 1.3
    assert row["ratio_low"] <= 1.2 <= row["ratio_high"]
    assert context["noise_sigma"] == pytest.approx(0.007, abs=0.003)  # the passes differ by 1%


def test_an_a_a_comparison_calls_nothing_slower(fixtures):
    frame, _ = compare.compare(fixtures / "cmp_base", fixtures / "cmp_same", 0.05)
    assert set(frame["verdict"]) == {"same"}


def test_the_threshold_is_a_minimum_effect(fixtures):
    frame, _ = compare.compare(fixtures / "cmp_base", fixtures / "cmp_new", 0.25)
    assert _verdicts(frame)[SLOW] == "same"  # +20% is within a 25% margin


def test_without_process_noise_a_change_is_uncertain(fixtures):
    """Single-pass runs and no history: the rounds alone cannot tell a
    change from the machine's drift between runs."""
    frame, context = compare.compare(fixtures / "run_base", fixtures / "run_new", 0.05)
    verdicts = _verdicts(frame)
    assert verdicts.pop(SLOW) == "uncertain" and context["noise_sigma"] is None
    assert set(verdicts.values()) == {"same"}  # +0.5%: within-run intervals inside the margin
    reason = frame.set_index("case_id").loc[SLOW, "reason"]
    assert "--history" in reason


def test_history_runs_of_the_base_code_supply_the_noise(fixtures):
    frame, context = compare.compare(fixtures / "run_base", fixtures / "run_new", 0.05,
                                     history=[fixtures / "cmp_same"])
    assert _verdicts(frame)[SLOW] == "slower" and context["history_runs"] == 1
    assert context["noise_sigma"] is not None


def test_failures_and_missing_cases(fixtures, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(fixtures / "cmp_same", new)
    rows = [json.loads(line) for line in (new / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if row["case_id"].startswith("conv2d-keras-k3s1"):
            row.update(status="oom", error="out of memory")
    rows = [row for row in rows if not row["case_id"].startswith("depthwise-keras-k3s1")]
    (new / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    verdicts = _verdicts(compare.compare(fixtures / "cmp_base", new, 0.05)[0])
    assert verdicts["conv2d-keras-k3s1-32px-c64-b8-f32-inf-nojit"] == "now fails"
    assert verdicts["depthwise-keras-k3s1-32px-c64-b8-f32-inf-nojit"] == "only in base"


def test_runs_from_different_machines_are_flagged(fixtures, tmp_path):
    machine = json.loads((fixtures / "cmp_same" / "run.json").read_text())["machine"]
    new = copy_run(fixtures / "cmp_same", tmp_path / "new", machine={**machine, "cpu": "Another CPU"})
    _, context = compare.compare(fixtures / "cmp_base", new, 0.05)
    assert any("different machines" in warning for warning in context["warnings"])


def test_runs_with_different_settings_are_flagged(fixtures, tmp_path):
    runs = {name: copy_run(fixtures / source, tmp_path / name, environment=environment)
            for name, source, environment in (
                ("base", "cmp_base", {"OMP_NUM_THREADS": "2"}),
                ("new", "cmp_same", {"OMP_NUM_THREADS": "2", "MALLOC_TRIM_THRESHOLD_": "4000000000"}))}
    _, context = compare.compare(runs["base"], runs["new"], 0.05)
    assert [w for w in context["warnings"] if "different settings" in w] == [
        "the two runs ran with different settings (MALLOC_TRIM_THRESHOLD_: unset -> 4000000000): a change may be "
        "the setting's, not the code's"]
    _, context = compare.compare(fixtures / "cmp_base", fixtures / "cmp_same", 0.05)
    assert not [w for w in context["warnings"] if "different settings" in w]
    # the C allocator that served each run (run.json's c_allocator), named first; the packages' versions
    for name, allocator, torch in (("base", "glibc 2.36 (libc.so.6), its defaults", "2.11.0"),
                                   ("new", "libjemalloc.so.2 (/usr/lib/libjemalloc.so.2), its defaults", "2.13.0")):
        runs[name] = copy_run(runs[name], tmp_path / f"{name}-2", c_allocator=allocator,
                              packages={"numpy": "2.3.0", "torch": torch})
    _, context = compare.compare(runs["base"], runs["new"], 0.05)
    assert [w for w in context["warnings"] if "different settings" in w] == [
        "the two runs ran with different settings (C allocator: glibc 2.36, its defaults -> libjemalloc.so.2, its "
        "defaults; torch: 2.11.0 -> 2.13.0; MALLOC_TRIM_THRESHOLD_: unset -> 4000000000): a change may be the "
        "setting's, not the code's"]
