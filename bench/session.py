"""One benchmark run: its options, cases, run directory, and how a case
becomes a result row.

case -> layer/model (registry) -> Step (backend runner) -> warm-up ->
timed rounds (`bench.timing.Timer`: latency, and device time on GPUs, with the
GPU's conditions from `bench.nvml`) -> memory, counters, profile -> one row
appended to results.jsonl; the latency rounds become pytest-benchmark's
rounds and the plain row values its extra_info.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from bench import backends, machine, nvml, provenance, rundir, sweeps, timing
from bench.cases import Case, drop_reason, not_run
from bench.options import (
    UsageError,
    parse_shard,
    pattern,
    resumable,
    same_allocator,
    same_backend,
    same_commit,
    same_kernels,
)
from layers import aggregation, counting, registry
from layers.aggregation import auto

MAX_STORED_ROUNDS = 1000  # per series in results.jsonl (thinned evenly beyond): what compare tests
def shard_cases(cases: list[Case], shard: tuple[int, int] | None) -> list[Case]:
    """Deterministic slice: case i of the id-sorted sweep goes to shard i mod N."""
    if shard is None:
        return cases
    index, count = shard
    ordered = sorted(cases, key=lambda c: c.id)
    return [case for i, case in enumerate(ordered) if i % count == index]


@dataclass
class Options:
    sweep: str | None = None
    run_dir: str | None = None
    resume: str | None = None
    shard: str | None = None
    tf32: bool = False
    profile: str | None = None
    bench_time: float | None = None
    l2: str | None = None
    case_timeout: float | None = None
    inject_failure: str | None = None
    inject_crash: str | None = None
    inject_hang: str | None = None
    report: bool = True
    thread_policy: dict | None = None  # bench.threads.apply's fields, applied before the frameworks loaded
    allow_other_commit: bool = False
    passes: int | None = None
    precompile: int = 0  # worker processes compiling the cases ahead (JAX, PyTorch)
    compile_cache: str | None = None  # the compilers' persistent caches (default with precompile)
    precompile_time: float | None = None  # seconds the workers may take (default: the case timeout)
    pass_index: int | None = None  # the pass to run, from the supervisor (else found from the rows)


@dataclass
class Summary:
    started: float = field(default_factory=time.perf_counter)
    statuses: dict[str, int] = field(default_factory=dict)
    overheads: list[float] = field(default_factory=list)
    timed: float = 0.0
    fastest_median: float | None = None


class BenchSession:
    def __init__(self, options: Options, root: Path):
        self.options = options
        self.runner = backends.current()
        self.compile_cache = self._compile_cache(options)  # before anything compiles
        policy = options.thread_policy or {"threads": None, "thread_policy": "not set (the frameworks' defaults)"}
        self.threads = policy | {"thread_setting": (self.runner.configure_threads(policy["threads"])
                                                    if policy["threads"] else "framework default")}
        self.provenance = provenance.collect(root)
        self.backend = self.runner.name
        self.device = self.runner.device_kind()
        self.device_name = self.runner.device_name()
        self.precision = self.runner.configure(options.tf32)
        try:  # read once: a bad switch ends the run here, in one line, not at each fused case
            self.kernel_switches = aggregation.kernel_switches(self.backend)
        except ValueError as error:
            raise UsageError(str(error)) from None
        self.shard = parse_shard(options.shard)

        if options.resume:
            self.run_dir = rundir.RunDir(options.resume)
            previous = resumable(options.resume)
            same_backend(previous, self.backend)
            if not options.allow_other_commit:
                same_commit(previous, self.provenance.get("git_commit"), options.resume)
            same_kernels(previous, self.kernel_switches, options.resume)
            same_allocator(previous, self.provenance["c_allocator"], options.resume)
            sweep_name = options.sweep or previous.get("sweep_source") or previous.get("sweep")
            self.shard = self.shard or (tuple(previous["shard"]) if previous.get("shard") else None)
        else:
            sweep_name = options.sweep or ("gpu" if self.device == "gpu" else "quick")
            device = "cpu" if self.device == "cpu" else machine.slug(self.device_name)
            path = options.run_dir or rundir.default_path(root, f"{self.backend}-{device}")
            self.run_dir = rundir.RunDir(path)
        try:
            self.sweep = sweeps.load(sweep_name)
        except sweeps.SweepError as error:
            raise UsageError(str(error)) from None
        # The numbers and choices of `options` were converted and bounded once, by bench.options.check.
        self.passes = options.passes or (previous.get("passes") if options.resume else None) or self.sweep.passes
        # Each pass gets its share of a case's time budget.
        self.time_per_case = (options.bench_time or self.sweep.time_per_case) / self.passes
        self.l2 = self._l2_mode(options.l2)
        self.monitor = nvml.Monitor(self.device)
        self._timer: timing.Timer | None = None
        self.case_timeout = options.case_timeout or self.sweep.case_timeout
        self.profile = pattern("--profile", options.profile) if options.profile != "*" else "*"
        self.inject = pattern("--bench-inject-failure", options.inject_failure)
        self.inject_crash = pattern("--bench-inject-crash", options.inject_crash)
        self.inject_hang = pattern("--bench-inject-hang", options.inject_hang)

        cases = shard_cases(self.sweep.cases(self.backend, self.device), self.shard)
        self.cases = [(case, drop_reason(case, self.backend, self.device)) for case in cases]
        # The cases this backend and device cannot run, by reason: they get no rows, so run.json and the
        # end-of-run summary say so.
        self.not_run = not_run(self.cases)
        self.by_id = {case.id: case for case in cases}
        runnable = {case.id for case, reason in self.cases if reason is None}
        if options.pass_index:  # named by the supervisor, with --resume
            self.pass_index = options.pass_index
        else:  # a user's --resume: the first pass that has not timed every case
            self.pass_index = self.run_dir.current_pass(runnable, self.passes) if options.resume else 1
        self.finished = self.run_dir.finished_ids(self.pass_index) if options.resume else set()
        self.summary = Summary()
        self.notes: list[str] = []  # said in the header: a lock taken over, a case settled
        self.attempts: dict[str, int] = {}
        self.overhead_per_round: float | None = None
        self.machine = machine.info()
        self.versions = self.runner.versions()
        self._created = False

    def _compile_cache(self, options: Options) -> str | None:
        from bench import compile_cache

        if not (options.precompile or options.compile_cache):
            return None
        if self.runner.name not in compile_cache.BACKENDS:
            flag = "--precompile" if options.precompile else "--compile-cache"
            value = options.precompile if options.precompile else options.compile_cache
            raise UsageError(f"{flag} fills the persistent compilation caches of JAX (XLA) and PyTorch (Triton, "
                             f"TorchInductor): run it with KERAS_BACKEND=jax or KERAS_BACKEND=torch (TensorFlow "
                             f"has no cache the suite fills). Received: {flag}={value} with "
                             f"KERAS_BACKEND={self.runner.name}")
        self.compile_cache_dir = options.compile_cache or compile_cache.DEFAULT_DIR
        try:
            rundir.writable_folder(self.compile_cache_dir, "--compile-cache")
        except rundir.RunDirError as error:
            raise UsageError(str(error)) from None
        return compile_cache.enable(self.compile_cache_dir, self.runner.name)

    def precompile(self) -> None:
        """Run the cases this pass still times that compile something in
        worker processes first (`--precompile N`); their compiled code then
        comes from the caches."""
        if not self.options.precompile or self.pass_index != 1:
            return
        from bench import compile_cache

        cases = [case for case, reason in self.cases
                 if reason is None and case.id not in self.finished and self.runner.compiles(case)]
        line = compile_cache.precompile(cases, self.options.precompile, self.compile_cache_dir, self.run_dir.path,
                                        timeout_s=self.options.precompile_time or self.case_timeout,
                                        tf32=self.options.tf32)
        self.notes.append(line)
        print(f"involution-bench: {line}", file=sys.stderr, flush=True)  # now: -q hides the header's notes

    # -- run directory -----------------------------------------------------
    def ensure_run_dir(self) -> None:
        """Own the run directory (its lock), record a case a previous session
        left in flight, and write run.json. Raises RunDirError (one line)."""
        if self._created:
            return
        stale = self.run_dir.lock()
        if stale:
            self.notes.append(f"took over the run directory's lock from process {stale}, which is no longer running")
        if self.options.resume:
            self.run_dir.repair_tail()
            self._settle_case_in_flight()
            self.finished = self.run_dir.finished_ids(self.pass_index)
        self.run_dir.create({
            "started": rundir.utc_stamp(),
            "backend": self.backend,
            "device": self.device,
            "device_name": self.device_name,
            "sweep": self.sweep.name,
            "sweep_source": self.sweep.source,
            "shard": list(self.shard) if self.shard else None,
            "precision": self.precision,
            "tf32": self.options.tf32,
            "l2": self.l2,
            "device_time_source": self.timer().source(),
            "gpu_conditions_source": self.monitor.reason,
            "time_per_case": self.time_per_case,
            "precision_target": self.sweep.precision,
            "case_timeout": self.case_timeout,
            "passes": self.passes,
            "pass": self.pass_index,
            "compile_cache": self.compile_cache,
            "precompile": self.options.precompile,
            "precompile_time": self.options.precompile_time,
            "kernel_switches": self.kernel_switches,
            "not_run": self.not_run,
            **self.provenance,
            **self.threads,
            "machine": self.machine,
            "versions": self.versions,
        })
        self._created = True

    def machine_info(self) -> dict:
        return {
            "backend": self.backend, "device": self.device, "device_name": self.device_name,
            "precision": self.precision, "tf32": self.options.tf32, "l2": self.l2, **self.machine, **self.versions,
        }

    # -- timing --------------------------------------------------------------
    def _l2_mode(self, requested: str | None) -> str:
        if requested is None:
            return "cold" if self.device == "gpu" else "warm"
        if requested == "cold" and self.device != "gpu":
            raise UsageError("--l2 cold flushes a GPU's L2 cache before each timed step, and this run has no GPU "
                             "(drop the option or use --l2 warm). Received: --l2=cold")
        return requested

    def timer(self) -> timing.Timer:
        """The run's timer, made once (the L2 flush buffer lives on the device)."""
        if self._timer is None:
            self._timer = timing.for_runner(self.runner, self.l2, self.time_per_case, self.sweep.min_rounds,
                                            self.sweep.max_rounds, self.sweep.precision)
        return self._timer

    # -- one case ----------------------------------------------------------
    def selected_for_profile(self, case: Case) -> bool:
        if self.profile is None:
            return False
        return self.profile == "*" or bool(self.profile.search(case.id))

    def base_row(self, case: Case) -> dict:
        return {
            "case_id": case.id, **case.params(), "kind": case.kind,
            "counterpart": registry.get(case.layer).counterpart,  # the convolution network of an involution one
            "backend": self.backend, "device": self.device,
            "device_name": self.device_name, "precision": self.precision, "tf32": self.options.tf32,
            "sweep": self.sweep.name, "shard": "/".join(map(str, self.shard)) if self.shard else "",
            **provenance.row_fields(self.provenance), "threads": self.threads["threads"],
            "pass": self.pass_index, "passes": self.passes,
        }

    def _settle_case_in_flight(self) -> None:
        """A previous session ended while a case ran. With the supervisor's
        verdict (crashed, timeout) the case gets its row and is not run again;
        without one (the whole sweep was killed from outside) it runs once
        more, and is recorded as crashed if that happens twice."""
        record = self.run_dir.in_flight()
        case_id = record.get("case_id")
        if not case_id:
            self.run_dir.end_case()
            return
        pass_index = int(record.get("pass") or 1)
        if case_id in self.run_dir.finished_ids(pass_index):  # its row was written just before the end
            self.run_dir.end_case()
            return
        outcome, detail = record.get("outcome"), record.get("detail")
        attempt = int(record.get("attempt") or 1)
        if outcome is None and attempt < 2:
            self.attempts[case_id] = attempt + 1
            self.notes.append(f"{case_id} was in flight when the previous session ended (cause unknown): "
                              "it runs again")
            return
        if outcome is None:
            outcome, detail = "crashed", f"the process ended {attempt} times while this case ran (cause unknown)"
        case = self.by_id.get(case_id)
        row = self.base_row(case) if case else {"case_id": case_id, "layer": "", "implementation": ""}
        seconds = (record.get("ended") or time.time()) - record.get("started", time.time())
        row.update(status=outcome, error=detail, wall_s=seconds, overhead_s=seconds, finished=rundir.utc_stamp(),
                   attempts=attempt, **{"pass": pass_index})
        self.run_dir.append(row)
        self.run_dir.end_case()
        self.summary.statuses[outcome] = self.summary.statuses.get(outcome, 0) + 1
        self.notes.append(f"{case_id}: recorded with status {outcome} ({detail}); not run again")

    def run(self, case: Case, benchmark) -> dict:
        self.ensure_run_dir()
        started = time.perf_counter()
        row = self.base_row(case)
        timed = 0.0
        self.run_dir.start_case(case.id, self.case_timeout, self.attempts.get(case.id, 1), self.pass_index)
        try:
            if self.inject_crash and self.inject_crash.search(case.id):
                os.abort()  # a test of the harness: the process dies in the middle of the case
            if self.inject_hang and self.inject_hang.search(case.id):
                import ctypes

                ctypes.PyDLL(None).pause()  # a test of the harness: native code that holds the GIL, forever
            module, x = self._build(case)
            row["implementation_resolved"] = self._resolved(case)
            row.update(self._analytic(case, module, row["implementation_resolved"]))
            out_shape = module.compute_output_shape(x.shape)
            rng = np.random.default_rng(zlib.crc32(case.id.encode()) + 1)
            cotangent = rng.standard_normal(tuple(out_shape)).astype("float32")
            compute_dtype = keras.DTypePolicy(case.dtype).compute_dtype
            cache_before = self._cache_counts()
            tiles_before, _ = self.runner.autotuner_choices()
            step = self.runner.prepare(case, module, x, cotangent, compute_dtype if case.kind == "layer" else "float32")
            if self.overhead_per_round is None:
                self.overhead_per_round = timing.harness_overhead(step.sync)
            warm = timing.warm_up(step.round)
            row.update(tiles_tuned(tiles_before, *self.runner.autotuner_choices()))  # tuned in the warm-up
            if self.inject and self.inject.search(case.id):
                raise RuntimeError("failure injected by --bench-inject-failure (a test of the harness)")
            if benchmark.enabled:
                with self.monitor.watch() as conditions:
                    measured = self.timer().measure(step.run, warm.estimate)
                row.update(self._stats(measured.latency))
                row.update(_stored(measured.fields()))
                row.update(conditions.fields())
                record_rounds(benchmark, measured.latency.seconds)
                timed = measured.latency.wall_s + (measured.device.wall_s if measured.device else 0.0)
            row.update(compile_seconds=step.info.get("compile_seconds", 0.0) + warm.compile_seconds,
                       warmup_calls=warm.calls, compile_cache=self._cache_verdict(cache_before))
            if self.pass_index == 1:  # counted once: later passes re-time the case in a fresh process
                row.update(self._counters(case, step))
                row.update(memory_check(case, out_shape, row))
            row.update(self._rates(case, row))
            row.update(status="ok", error="")
        except Exception as error:  # a failing case is a row, the sweep goes on
            row.update(status=self.runner.classify(error), error=_describe(error))
        row["wall_s"] = time.perf_counter() - started
        row["overhead_s"] = row["wall_s"] - timed
        row["finished"] = rundir.utc_stamp()
        try:
            self.run_dir.append(row)
        finally:
            self.run_dir.end_case()
        benchmark.extra_info.update({k: row.get(k) for k in rundir.EXTRA_INFO if _plain(row.get(k))})
        self._count(row, timed)
        return row

    def _cache_counts(self) -> tuple[int, int] | None:
        if not self.compile_cache:
            return None
        from bench import compile_cache

        return compile_cache.counts()

    def _cache_verdict(self, before: tuple[int, int] | None) -> str:
        """Where the case's executables came from (compile and warm-up)."""
        if before is None:
            return "off"
        from bench import compile_cache

        return compile_cache.verdict(before, compile_cache.counts())

    def _counters(self, case: Case, step) -> dict:
        """Peak memory, measured FLOPs and the profile, after the timed rounds.
        A counter that fails leaves the timing: its value is None and its
        source names the error."""
        out: dict = {}
        for value, source, read in (
            ("peak_memory_bytes", "peak_memory_source", lambda: self.runner.peak_memory(step)),
            ("flops_measured", "flops_measured_source", lambda: self.runner.measured_flops(step)),
        ):
            try:
                out[value], out[source] = read()
            except Exception as error:
                out[value], out[source] = None, f"failed: {_describe(error)}"
        if self.selected_for_profile(case):
            from bench import profiling

            try:
                out.update(profiling.capture(self, case, step))
            except Exception as error:
                out.update(trace_dir=None, top_ops=None, top_ops_source=f"failed: {_describe(error)}")
        return out

    def _build(self, case: Case):
        return build_case(case)

    def _analytic(self, case: Case, module, implementation: str) -> dict:
        if case.kind == "layer":
            figures = counting.layer_figures(
                case.layer, implementation, batch=case.batch, resolution=case.resolution, channels=case.channels,
                kernel_size=case.kernel_size, stride=case.stride, groups=case.groups,
                reduction_ratio=case.reduction_ratio, dtype=case.dtype, mode=case.mode,
            )
            return figures.as_dict()
        macs = counting.model_macs(module) * case.batch
        trainable = sum(int(np.prod(w.shape)) for w in module.trainable_weights)
        return {
            "params": counting.model_params(module), "trainable_params": trainable, "macs": macs,
            "flops": 2 * macs * (3 if case.mode == "training" else 1),
            "bytes_min": None, "bytes_aggregation": None, "largest_intermediate_bytes": None,
        }

    def _resolved(self, case: Case) -> str:
        """The implementation the case runs: `auto` resolved as the layer
        resolves it for this backend, device, mode and compute dtype."""
        if not registry.get(case.layer).involution or case.implementation != "auto":
            return case.implementation
        return auto.choose(self.backend, self.device, case.mode, keras.DTypePolicy(case.dtype).compute_dtype)

    @staticmethod
    def _stats(series: timing.Series) -> dict:
        data = list(series.seconds)
        q1, q3 = series.quartiles()
        low, high = series.interval()
        return {
            "rounds": len(data), "median_s": series.median, "mean_s": statistics.fmean(data), "min_s": min(data),
            "max_s": max(data), "stddev_s": statistics.stdev(data) if len(data) > 1 else 0.0, "q1_s": q1,
            "q3_s": q3, "iqr_s": q3 - q1, "median_ci_low_s": low, "median_ci_high_s": high,
            "stopped_by": series.stopped_by, "rounds_s": _thinned(data),
        }

    def _rates(self, case: Case, row: dict) -> dict:
        """Throughput, GFLOP/s and GB/s from the device time where there is
        one (cold L2 by default on GPUs), else from the latency."""
        device = row.get("device_median_s")
        median = device or row.get("median_s")
        if not median:
            return {}
        basis = f"device time (L2 {row.get('l2')})" if device else "latency"
        peaks = machine.peaks(self.device_name, case.dtype, self.options.tf32)
        rates = {"throughput": case.batch / median, "gflops_per_s": row["flops"] / median / 1e9, **peaks,
                 "gbytes_per_s": None, "flops_fraction": None, "bandwidth_fraction": None, "rates_from": basis}
        if row.get("bytes_min"):
            rates["gbytes_per_s"] = row["bytes_min"] / median / 1e9
        if peaks["peak_flops"]:
            rates["flops_fraction"] = row["flops"] / median / peaks["peak_flops"]
        if peaks["peak_bandwidth"] and row.get("bytes_min"):
            rates["bandwidth_fraction"] = row["bytes_min"] / median / peaks["peak_bandwidth"]
        return rates

    def _count(self, row: dict, timed: float) -> None:
        s = self.summary
        s.statuses[row["status"]] = s.statuses.get(row["status"], 0) + 1
        s.overheads.append(row["overhead_s"])
        s.timed += timed
        if row.get("median_s") and (s.fastest_median is None or row["median_s"] < s.fastest_median):
            s.fastest_median = row["median_s"]

    # -- end of run --------------------------------------------------------
    def stop_writing(self, config) -> None:
        """After a write failed: no benchmark.json and no report at the end
        (they would fail the same way, with a traceback)."""
        self.options.report = False
        bench_json = getattr(config, "_benchmarksession", None)
        if bench_json is not None:
            bench_json.json = None

    def summary_lines(self) -> list[str]:
        s = self.summary
        wall = time.perf_counter() - s.started
        done = sum(s.statuses.values())
        lines = [f"involution-bench: {done} case(s) on {self.backend}/{self.device_name}"
                 + (f", pass {self.pass_index} of {self.passes}" if self.passes > 1 else "") + " "
                 f"({', '.join(f'{v} {k}' for k, v in sorted(s.statuses.items())) or 'none run'}); "
                 f"sweep {self.sweep.name}{' shard ' + '/'.join(map(str, self.shard)) if self.shard else ''}"]
        if self.not_run:
            lines.append(f"  not run on this backend and device: {sum(map(len, self.not_run.values()))} of the "
                         f"{'shard' if self.shard else 'sweep'}'s {len(self.cases)} cases (reasons: run.json's "
                         "not_run)")
        lines.append(f"  wall time {wall:.1f} s, of which timed rounds {s.timed:.1f} s")
        lines.append(f"  device time: {self.timer().source()}")
        if s.overheads:
            lines.append(f"  per-case overhead (build, compile, warm-up, memory, counters): median "
                         f"{statistics.median(s.overheads):.2f} s, total {sum(s.overheads):.1f} s")
        if self.overhead_per_round is not None:
            share = ""
            if s.fastest_median:
                share = f" ({100 * self.overhead_per_round / s.fastest_median:.2f}% of the fastest case's median)"
            lines.append(f"  harness cost per round: {self.overhead_per_round * 1e6:.2f} us{share}")
        lines.append(f"  results: {self.run_dir.results}" if self.run_dir.results.exists()
                     else "  results: none (no case ran)")
        return lines


def build_case(case: Case) -> tuple[keras.layers.Layer, np.ndarray]:
    """The case's layer or model, built under its dtype policy with weights
    seeded by the case id, and its float32 input (B, H, W, C)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(case.dtype)
    try:
        keras.utils.set_random_seed(zlib.crc32(case.id.encode()))
        module = registry.build(case.layer, **case.params())
        shape = (case.batch, case.resolution, case.resolution, case.channels)
        if case.kind == "layer":
            module.build(shape)
    finally:
        keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    x = rng.standard_normal(shape).astype("float32")
    return module, x


def memory_check(case: Case, out_shape, row: dict) -> dict:
    """A step must at least create its output, and a training step the
    gradients of its input and weights, which it returns together: a
    measured peak below the larger missed the step's memory. (Not their sum:
    the output may be freed before the last gradient is made, as TensorFlow
    once did with a Conv2D's bias gradient.) Such a peak is not reported
    (`peak_memory_bytes` None); the value stays in
    `peak_memory_measured_bytes` with the reason."""
    measured = row.get("peak_memory_bytes")
    item = counting.ACTIVATION_BYTES[case.dtype] if case.kind == "layer" else 4
    floor = int(np.prod(out_shape)) * item
    if case.mode == "training":
        gradients = int(row.get("trainable_params") or 0) * counting.WEIGHT_BYTES
        if case.kind == "layer":
            gradients += case.batch * case.resolution * case.resolution * case.channels * item
        floor = max(floor, gradients)
    fields = {"peak_memory_floor_bytes": floor, "peak_memory_measured_bytes": measured,
              "peak_memory_valid": None, "peak_memory_invalid_reason": ""}
    if measured is None:
        return fields
    fields["peak_memory_valid"] = measured >= floor
    if measured < floor:
        fields.update(peak_memory_bytes=None, peak_memory_invalid_reason=(
            f"measured {measured:,} B, less than the {floor:,} B the step's own "
            f"{'output or gradients' if case.mode == 'training' else 'output'} take: the measurement "
            f"({row.get('peak_memory_source')}) missed the step's memory"))
    return fields


def tiles_tuned(before: dict | None, after: dict | None, source: str) -> dict:
    """The autotuner's choices this case made, those not made before it:
    "kernel tile" pairs, sorted ("" when it tuned nothing, e.g. a geometry
    an earlier case tuned); None, with the reason, where none can be read.
    Each choice appears once per process: once per pass, and again after
    a crash's restart (the autotuner's cache lives in the process)."""
    if after is None:
        return {"triton_tiles_tuned": None, "triton_tiles_source": source}
    made = sorted(f"{kernel} {tile}" for (kernel, key), tile in after.items() if (kernel, key) not in (before or {}))
    return {"triton_tiles_tuned": ", ".join(made), "triton_tiles_source": source}


def record_rounds(benchmark, seconds) -> None:
    """Give pytest-benchmark the latency rounds the suite's timer measured.

    pytest-benchmark times host code and knows nothing of devices, flushes or
    stopping rules; its rounds, `benchmark.json` and `pytest-benchmark compare`
    carry these rounds instead (one step each, the device wait inside). Its
    fixture allows one use per test, as with `pedantic`."""
    if getattr(benchmark, "_mode", None):
        raise RuntimeError("the benchmark fixture was already used in this test")
    stats = benchmark._make_stats(1)
    for value in seconds:
        stats.update(value)
    benchmark._mode = "involution-bench timer"


def _thinned(values: list[float]) -> list[float]:
    """At most MAX_STORED_ROUNDS rounds, picked evenly from first to last so that a
    drift over the run stays visible (a prefix would hide it)."""
    if len(values) <= MAX_STORED_ROUNDS:
        return list(values)
    picks = np.linspace(0, len(values) - 1, MAX_STORED_ROUNDS).round().astype(int)
    return [values[i] for i in picks]


def _stored(fields: dict) -> dict:
    if fields.get("device_rounds_s"):
        fields = fields | {"device_rounds_s": _thinned(fields["device_rounds_s"])}
    return fields


def _plain(value) -> bool:
    """JSON scalars (None included: a field not measured here is null in benchmark.json too)."""
    return value is None or isinstance(value, (int, float, str, bool))


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    frames = traceback.extract_tb(error.__traceback__)
    where = next((f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames)), "")
    return (text[:1500] + (f" [at {where}]" if where else "")).replace("\n", " ")
