"""Persistent compilation caches, and compiling a sweep's cases ahead in parallel.

On a GPU a sweep waits mostly for compilers (docs/PERF.md, section 7): XLA
and Pallas on JAX (a median 1.78 s of overhead per case), Triton's
autotuned kernels on PyTorch (8 s a new geometry, up to 84 s), all on one
host core at a time in the sweep's process. With `--precompile N` the sweep
first runs the cases it still has to time that compile anything in N worker
processes — a share each, on the host's cores, before anything is timed —
and the compilers store what they make in their on-disk caches under one
directory (`--compile-cache`):

- JAX: XLA's persistent compilation cache (`<dir>/jax`), which holds the
  Pallas kernels too; a worker compiles each case's step without running it.
  jax-triton compiles the `triton` kernels while a step is lowered, before
  that cache is looked up, so their PTX has a cache of its own
  (`<dir>/jax-triton`, `layers.aggregation.triton_jax.cache_kernels`).
- PyTorch: Triton's kernel cache (`<dir>/triton`) and TorchInductor's
  (`<dir>/inductor`, the FX-graph and AOT-autograd caches of
  `torch.compile`); a worker runs each step once. Eager cases compile
  nothing and are left out. Triton's autotuner times its tile choices on the
  device while the workers share it, so those choices are not kept
  (TRITON_CACHE_AUTOTUNING=0 in the workers): the sweep tunes again, timing
  kernels it loads from the cache instead of compiling them.

Each row says where its compiled code came from (`compile_cache`: `hit`,
`miss`, `none` when nothing was compiled, or `off` without a cache), so that
a `compile_seconds` read from a cache is not taken for a compilation time.

Run by the sweep as `python -m bench.compile_cache --worker I/N --cases FILE
--cache DIR` (one process per worker, KERAS_BACKEND as the sweep's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import command_line

DEFAULT_DIR = Path("~/.cache/involution-bench/compilation").expanduser()
BACKENDS = ("jax", "torch")  # the backends whose compilers keep a persistent cache the suite fills
CASES_FILE = "precompile-cases.json"  # in the run directory
LOG_FILE = "precompile-{index}.log"
SUMMARY_FILE = "precompile.txt"  # the summary line of each session that precompiled
_JAX_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}
# torch._dynamo's counters of TorchInductor's caches; a bypass compiled the graph.
_INDUCTOR_COUNTERS = {("inductor", "fxgraph_cache_hit"): "hits", ("inductor", "fxgraph_cache_miss"): "misses",
                      ("inductor", "fxgraph_cache_bypass"): "misses"}
_counts = {"hits": 0, "misses": 0}
_listening = False
_backend: str | None = None


def enable(directory: str | Path, backend: str) -> str:
    """Compile through `backend`'s persistent caches under `directory`
    (every executable or kernel, however fast it compiled). Call before the
    first compilation; returns a line for the run's header."""
    if backend not in BACKENDS:
        raise ValueError(f"No persistent compilation cache for KERAS_BACKEND={backend}; "
                         f"use one of {list(BACKENDS)}. Received: backend={backend!r}")
    global _backend
    _backend = backend
    path = Path(directory).expanduser().resolve()
    if backend == "jax":
        return _enable_jax(path)
    return _enable_torch(path)


def _enable_jax(path: Path) -> str:
    import importlib.util

    import jax
    from jax import monitoring

    global _listening
    (path / "jax").mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    line = f"JAX persistent compilation cache in {path / 'jax'}"
    if importlib.util.find_spec("triton") is not None:  # the Triton kernels that jax-triton compiles
        from layers.aggregation import triton_jax

        triton_jax.cache_kernels(path / "jax-triton")
        _JAX_EVENTS.update({triton_jax.CACHE_HIT_EVENT: "hits", triton_jax.CACHE_MISS_EVENT: "misses"})
        line += f", jax-triton's kernels in {path / 'jax-triton'}"
    if not _listening:
        monitoring.register_event_listener(_count_jax)
        _listening = True
    return line


def _count_jax(event: str, **_) -> None:
    if event in _JAX_EVENTS:
        _counts[_JAX_EVENTS[event]] += 1


def _enable_torch(path: Path) -> str:
    # Both are read when a kernel or graph is first looked up, not at import.
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
    try:
        from triton import knobs
    except ImportError:  # no Triton: only TorchInductor's CPU code is cached
        return f"TorchInductor cache in {path / 'inductor'} (no Triton)"
    knobs.compilation.listener = _count_triton
    return f"Triton kernel cache in {path / 'triton'}, TorchInductor cache in {path / 'inductor'}"


def _count_triton(*, cache_hit: bool, **_) -> None:
    _counts["hits" if cache_hit else "misses"] += 1


def counts() -> tuple[int, int]:
    """(cache hits, cache misses) of this process so far."""
    hits, misses = _counts["hits"], _counts["misses"]
    if _backend == "torch":
        from torch._dynamo.utils import counters

        for (group, name), kind in _INDUCTOR_COUNTERS.items():
            if kind == "hits":
                hits += counters[group][name]
            else:
                misses += counters[group][name]
    return hits, misses


def verdict(before: tuple[int, int], after: tuple[int, int]) -> str:
    """`hit` when every executable or kernel compiled between two `counts()`
    came from the cache, `miss` when any was compiled, `none` when nothing
    compiled."""
    hits, misses = after[0] - before[0], after[1] - before[1]
    return "miss" if misses else ("hit" if hits else "none")


def precompile(cases: list, workers: int, cache_dir: str | Path, run_dir: Path, timeout_s: float,
               tf32: bool) -> str:
    """Compile `cases` into the caches with `workers` processes, configured
    as the sweep is (the precision is part of a program); one summary line.
    The sweep passes the cases whose runner `compiles()` them."""
    if not cases:
        return "precompile: no case left to compile"
    started = time.perf_counter()
    # The workers run from the repository's root: a relative folder would be another one there.
    cache_dir, run_dir = Path(cache_dir).expanduser().resolve(), Path(run_dir).resolve()
    cases_file = run_dir / CASES_FILE
    cases_file.write_text(json.dumps([dataclasses.asdict(case) for case in cases]))
    env = dict(os.environ)
    # A worker compiles; it must not take the GPU's memory from the sweep.
    env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="2")
    # Tile choices timed while the workers share the GPU are not to be kept.
    env["TRITON_CACHE_AUTOTUNING"] = "0"
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
        line += f"; {failed} failed (compiled again where they are timed; see {LOG_FILE.format(index='*')})"
    if stopped:
        line += f"; {stopped} process(es) stopped after {timeout_s:g} s"
    with open(run_dir / SUMMARY_FILE, "a") as summary:  # kept even when the sweep is cut off before its end
        summary.write(line + "\n")
    return line


def _worker(index: int, count: int, cases_file: Path, cache_dir: str, tf32: bool) -> int:
    enable(cache_dir, os.environ.get("KERAS_BACKEND", "jax"))
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
            runner.precompile(step)
            print(f"compiled {case.id} in {time.perf_counter() - started:.2f} s", flush=True)
        except Exception as error:  # the sweep will compile it, and record its error if it has one
            print(f"failed {case.id}: {type(error).__name__}: {str(error)[:300]}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = command_line.Parser(prog="python -m bench.compile_cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", required=True, metavar="I/N")
    parser.add_argument("--cases", required=True, type=Path)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--tf32", action="store_true")
    args = parser.parse_args(argv)
    index, count = (int(v) for v in args.worker.split("/"))
    return _worker(index, count, args.cases, args.cache, args.tf32)


if __name__ == "__main__":
    sys.exit(main())
