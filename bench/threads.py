"""One thread policy for every backend, so CPU comparisons across backends
are fair: N cores (the machine's, or `--threads N`) for each framework's
intra-op work.

JAX (XLA:CPU) has no intra-op thread option: it sizes its thread pool from
the process's CPU affinity. So the policy pins the process to N cores before
any framework loads (which bounds every framework's pools alike), sets the
OpenMP/MKL/OpenBLAS thread counts to N, and each backend runner sets its own
intra-op count to N where it has one (TensorFlow, PyTorch;
`Runner.configure_threads`). Inter-op pools stay at each framework's
default; the policy and each runner's setting are recorded with the results.
"""

from __future__ import annotations

import os

from bench.options import UsageError

ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cores() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def apply(requested: int | None) -> dict:
    """Pin the process to N cores and set the thread-count variables; call
    before a framework loads. Returns the row fields of the policy."""
    usable = cores()
    count = len(usable) if requested is None else requested
    if count < 1 or count > len(usable):
        raise UsageError(f"--threads takes 1 to {len(usable)} (the cores this process may use). "
                         f"Received: --threads={requested}")
    if hasattr(os, "sched_setaffinity") and count < len(usable):
        os.sched_setaffinity(0, usable[:count])
    for name in ENV:
        os.environ[name] = str(count)
    chosen = "--threads" if requested else "all the machine's cores"
    return {"threads": count,
            "thread_policy": f"{count} core(s) ({chosen}): CPU affinity, {'/'.join(ENV)}={count}, and each "
                             f"framework's intra-op threads where it has a setting"}
