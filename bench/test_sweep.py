"""The benchmark: one parametrized test, one case per parameter.

Run with `pytest bench --benchmark-only [--sweep NAME|PATH] ...`; see
bench/conftest.py for the options and README.md for what a run produces.
"""

import pytest


def test_case(case, benchmark, bench_session):
    row = bench_session.run(case, benchmark)
    if row["status"] != "ok":
        # The failure is a row of results.jsonl; the sweep goes on.
        pytest.skip(f"{case.id}: recorded with status {row['status']}: {row['error'][:300]}")
