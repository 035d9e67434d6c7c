"""`python -m bench.calibrate` on this machine's CPU: a copy of known size
through the suite's timer, one JSON line a measurement, and one-line
refusals of bad arguments."""

from __future__ import annotations

import json

import pytest

from bench import calibrate
from tests import backend as tb


def test_a_copy_is_timed_and_its_bandwidth_reported(capsys):
    assert calibrate.main(["--mib", "8", "--time", "0.05", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # a CPU has no L2 to flush: warm only
    row = json.loads(lines[0])
    assert row["backend"] == tb.NAME and row["l2"] == "warm" and row["bytes_moved"] == 2 * 8 * 2**20
    assert row["latency_s"] > 0 and row["latency_gb_s"] == pytest.approx(row["bytes_moved"] / row["latency_s"] / 1e9)
    # on a CPU there is no device time, and the row says why; no datasheet peak for a CPU
    assert row["device_s"] is None and row["device_gb_s"] is None and row["device_time_source"]
    assert row["datasheet_gb_s"] is None


@pytest.mark.parametrize("args, shown", [(["--mib", "0"], "--mib=0"), (["--time", "-1"], "--time=-1")])
def test_bad_sizes_are_refused_in_one_line(capsys, args, shown):
    with pytest.raises(SystemExit) as end:
        calibrate.main(args)
    assert end.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "must be positive" in lines[0] and shown in lines[0], lines
