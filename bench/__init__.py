"""The benchmark suite: `pytest bench --benchmark-only`."""
