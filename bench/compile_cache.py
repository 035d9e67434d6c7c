"""JAX's persistent compilation cache, and compiling a sweep's cases ahead in parallel.

On a GPU a JAX sweep waits mostly for XLA (docs/PERF.md, section 7: a median
1.78 s of overhead per case, most of it compilation), which runs on one host
core at a time in the sweep's process. With `--precompile N` the sweep first
compiles the cases it still has to run in N worker processes — a share of the
cases each, on the host's cores, before anything is timed — into JAX's
persistent compilation cache; the sweep then loads each executable from the
cache. Each row says where its executable came from (`compile_cache`: `hit`,
`miss`, or `off` without a cache), so that a `compile_seconds` read from the
cache is not taken for a compilation time.

Only JAX: PyTorch's Triton kernels are autotuned by timing them on the device,
which cannot happen beside the sweep's own timing.

Run by the sweep as `python -m bench.compile_cache --worker I/N --cases FILE
--cache DIR` (one process per worker).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path("~/.cache/involution-bench/jax-compilation").expanduser()
CASES_FILE = "precompile-cases.json"  # in the run directory
LOG_FILE = "precompile-{index}.log"
_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}
_counts = {"hits": 0, "misses": 0}
_listening = False


def enable(directory: str | Path) -> str:
    """Compile through JAX's persistent cache in `directory` (every
    executable, however fast it compiled). Call before the first compilation."""
    import jax
    from jax import monitoring

    global _listening
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if not _listening:
        monitoring.register_event_listener(_count)
        _listening = True
    return f"JAX persistent compilation cache in {path}"


def _count(event: str, **_) -> None:
    if event in _EVENTS:
        _counts[_EVENTS[event]] += 1


def counts() -> tuple[int, int]:
    """(cache hits, cache misses) of this process so far."""
    return _counts["hits"], _counts["misses"]


def verdict(before: tuple[int, int], after: tuple[int, int]) -> str:
    """`hit` when every executable compiled between two `counts()` came from
    the cache, `miss` when any was compiled, `none` when nothing compiled."""
    hits, misses = after[0] - before[0], after[1] - before[1]
    return "miss" if misses else ("hit" if hits else "none")


def precompile(cases: list, workers: int, cache_dir: str | Path, run_dir: Path, timeout_s: float,
               tf32: bool) -> str:
    """Compile `cases` into the cache with `workers` processes, configured as
    the sweep is (the precision is part of a program); one summary line."""
    if not cases:
        return "precompile: no case left to compile"
    started = time.perf_counter()
    cases_file = run_dir / CASES_FILE
    cases_file.write_text(json.dumps([dataclasses.asdict(case) for case in cases]))
    env = dict(os.environ)
    # A worker compiles; it must not take the GPU's memory from the sweep.
    env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="2")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    processes = []
    for index in range(workers):
        log = open(run_dir / LOG_FILE.format(index=index), "w")  # noqa: SIM115 (closed below)
        command = [sys.executable, "-m", "bench.compile_cache", "--worker", f"{index}/{workers}",
                   "--cases", str(cases_file), "--cache", str(cache_dir), *(["--tf32"] if tf32 else [])]
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root), log))
    deadline = started + timeout_s
    stopped = 0
    for process, log in processes:
        try:
            process.wait(timeout=max(deadline - time.perf_counter(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            stopped += 1
        log.close()
    compiled = failed = 0
    for index in range(workers):
        for line in (run_dir / LOG_FILE.format(index=index)).read_text(errors="replace").splitlines():
            compiled += line.startswith("compiled ")
            failed += line.startswith("failed ")
    line = (f"precompile: {compiled} of {len(cases)} cases compiled into the cache by {workers} processes in "
            f"{time.perf_counter() - started:.1f} s")
    if failed:
        line += f"; {failed} failed (the sweep compiles those itself, see {LOG_FILE.format(index='*')})"
    if stopped:
        line += f"; {stopped} process(es) stopped after {timeout_s:.0f} s"
    return line


def _worker(index: int, count: int, cases_file: Path, cache_dir: str, tf32: bool) -> int:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    enable(cache_dir)
    import keras
    import numpy as np

    from bench import backends
    from bench.cases import Case
    from bench.session import build_case

    runner = backends.current()
    runner.configure(tf32)
    cases = [Case(**fields) for fields in json.loads(cases_file.read_text())][index::count]
    for case in cases:
        started = time.perf_counter()
        try:
            module, x = build_case(case)
            cotangent = np.zeros(tuple(module.compute_output_shape(x.shape)), "float32")
            dtype = keras.DTypePolicy(case.dtype).compute_dtype if case.kind == "layer" else "float32"
            step = runner.prepare(case, module, x, cotangent, dtype)
            runner.compiled(step)  # the executable the sweep's analyses read, jit on or off
            print(f"compiled {case.id} in {time.perf_counter() - started:.2f} s", flush=True)
        except Exception as error:  # the sweep will compile it, and record its error if it has one
            print(f"failed {case.id}: {type(error).__name__}: {str(error)[:300]}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile_cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", required=True, metavar="I/N")
    parser.add_argument("--cases", required=True, type=Path)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--tf32", action="store_true")
    args = parser.parse_args(argv)
    index, count = (int(v) for v in args.worker.split("/"))
    return _worker(index, count, args.cases, args.cache, args.tf32)


if __name__ == "__main__":
    sys.exit(main())
