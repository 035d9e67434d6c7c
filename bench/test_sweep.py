"""The benchmark: one parametrized test, one case per parameter.

Run with `pytest bench --benchmark-only [--sweep NAME|PATH] ...`; see
bench/conftest.py for the options and README.md for what a run produces.
"""

import pytest

from bench.rundir import RunDirError


def test_case(case, benchmark, bench_session, request):
    try:
        row = bench_session.run(case, benchmark)
    except RunDirError as error:
        # Nowhere to write (a full disk): stop with one line; the rows written so far stay.
        bench_session.stop_writing(request.config)
        pytest.exit(str(error), returncode=pytest.ExitCode.TESTS_FAILED)
    if row["status"] != "ok":
        # The failure is a row of results.jsonl; the sweep goes on.
        pytest.skip(f"{case.id}: recorded with status {row['status']}: {row['error'][:300]}")
