"""Check the fused-kernel targets on the current backend.

    KERAS_BACKEND=jax   python -m bench.targets --out DIR
    KERAS_BACKEND=torch python -m bench.targets --out DIR

At the RedNet stage configurations (batch 64, K = 7, 16 channels per group,
reduction 4) it times the whole Involution layer with the backend's fused
implementation (and the portable ones beside it) against the same backend's
Keras Conv2D(C, 7) and DepthwiseConv2D(7), float32 with TF32 allowed and
mixed bfloat16, forward and forward + backward; then the aggregation alone,
whose bytes (`layers.counting`: input + generated kernel + output, and the
backward's reads and writes in training) over its time give the bandwidth it
reaches.

Every case is timed by the suite's one timer (`bench.timing`), as the sweep
times it: `step_s` is the device time per step (CUDA events on PyTorch, steps
back to back on JAX) with a cold L2 unless `--l2 warm`, the figure the targets
use; `latency_s` the host-timed single step.

Writes targets-<backend>.csv (one row per timed case), targets-<backend>.md
(the target table) and prints the table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from bench import command_line, keras_backend, timing
from bench.cases import DTYPES as ALL_DTYPES
from bench.cases import MODES

STAGES = ((56, 64, 4), (28, 128, 8), (14, 256, 16))  # (resolution, channels, groups)
KERNEL_SIZE = 7
REDUCTION = 4
DTYPES = ("float32", "mixed_bfloat16")  # the precisions of issue 12's targets: the default of --dtypes


def fused_implementations(backend: str) -> list[str]:
    """The backend's fused kernels, from the aggregation registry."""
    from layers import aggregation

    return [name for name, impl in aggregation.IMPLEMENTATIONS.items() if impl.fused and backend in impl.backends]


def portable_implementations(backend: str) -> list[str]:
    """The backend's implementations that build no patch tensor and are not fused."""
    from layers import aggregation

    return [name for name, impl in aggregation.IMPLEMENTATIONS.items()
            if backend in impl.backends and not impl.fused and not impl.materialises_patches]


def _kernel_variant(backend: str) -> dict:
    """How the fused kernels were built, by the switches a GPU session times
    against each other (`aggregation.kernel_switches`): `rows_per_step` (1:
    rows a loop, the default; K: INVOLUTION_UNROLL_WINDOW=1, every tap
    unrolled) and the Triton kernels' `tile_width` (0: flat tiles, the
    default; N: INVOLUTION_TILE_WIDTH=N; None where Triton is not installed)."""
    from layers import aggregation
    from layers.aggregation._common import TILE_WIDTH, rows_per_step

    switches = aggregation.kernel_switches(backend)
    return {"rows_per_step": rows_per_step(KERNEL_SIZE), "tile_width": switches.get(TILE_WIDTH)}


def time_step(timer, run, sync) -> dict:
    """Warm-up, then the timer's rounds: the row fields of one timed step."""
    warm = timing.warm_up(lambda: sync(run()), min_calls=5)
    measured = timer.measure(run, warm.estimate)
    fields = measured.fields()
    device = fields["device_median_s"]
    if device is not None:  # the device series' interval: fields() has bootstrapped it already
        low, high = fields["device_median_ci_low_s"], fields["device_median_ci_high_s"]
        rounds = fields["device_rounds_s"]
    else:
        (low, high), rounds = measured.latency.interval(), list(measured.latency.seconds)
    return {"step_s": device if device is not None else measured.latency.median, "step_ci_low_s": low,
            "step_ci_high_s": high, ROUNDS: rounds,
            "latency_s": measured.latency.median, "rounds": len(measured.latency.seconds),
            "device_rounds": fields["device_rounds"], "stopped_by": fields["device_stopped_by"]
            or measured.latency.stopped_by, "device_time_source": fields["device_time_source"], "l2": fields["l2"],
            "steps_per_round": fields["device_steps_per_round"]}


def layer_cases(batch: int, stage, dtype: str, mode: str, impls, jit: bool) -> list:
    """The layer cases timed at one stage, dtype and mode: the involution
    implementations, then Conv2D(C, 7) and DepthwiseConv2D(7), as the sweep's
    `Case`s (what `--precompile` hands its workers)."""
    from bench.cases import Case

    resolution, channels, groups = stage
    variants = [("involution", impl) for impl in impls] + [("conv2d", "keras"), ("depthwise", "keras")]
    return [Case(layer, impl, KERNEL_SIZE, 1, groups, REDUCTION, resolution, channels, batch, dtype, mode,
                 jit).normalised() for layer, impl in variants]


def _layer_rows(runner, timer, backend: str, batch: int, stage, dtype: str, mode: str, impls, jit: bool,
                cached: bool = False) -> list[dict]:
    """Time each layer case. The first portable involution implementation
    is the reference: every other involution layer runs on its weights and
    input, and its row records the relative error of its outputs (inference)
    or gradients (training) against the reference's (`rel_err_vs_<name>`): a
    fused kernel is checked as the GPU compiled it, at the size it is timed."""
    import keras

    from bench import compile_cache
    from bench.session import build_case, tiles_tuned

    resolution, channels, groups = stage
    portable = portable_implementations(backend)
    reference = None  # (name, weights, input, outputs) of the reference layer
    rows = []
    cases = layer_cases(batch, stage, dtype, mode, impls, jit)
    cases.sort(key=lambda case: case.layer == "involution" and case.implementation not in portable)  # stable
    for case in cases:
        row = {"backend": backend, "layer": case.layer, "implementation": case.implementation,
               "resolution": resolution, "channels": channels, "groups": groups, "batch": batch, "dtype": dtype,
               "mode": mode, "jit": jit, "what": "layer"}
        try:
            module, x = build_case(case)
            checked = case.layer == "involution" and reference is not None
            if checked:  # the reference's weights and input (before any step updates a moving statistic)
                module.set_weights(reference[1])
                x = reference[2]
            weights = module.get_weights() if case.layer == "involution" and reference is None else None
            cotangent = np.random.default_rng(1).standard_normal(x.shape).astype("float32")
            compute = keras.DTypePolicy(dtype).compute_dtype
            tiles_before, _ = runner.autotuner_choices()
            compiled_before = compile_cache.counts()
            step = runner.prepare(case, module, x, cotangent, compute)
            row.update(time_step(timer, step.run, step.sync), status="ok")
            if cached:  # where the warm-up's compiled code came from (the workers' caches, or compiled here)
                row["compile_cache"] = compile_cache.verdict(compiled_before, compile_cache.counts())
            row.update(tiles_tuned(tiles_before, *runner.autotuner_choices()))  # which tiles won, for pruning
            if checked:
                row["rel_err_vs_" + reference[0]] = relative_error(_to_numpy(step.run()), reference[3])
            elif weights is not None and case.implementation in portable:
                reference = (case.implementation, weights, x, _to_numpy(step.run()))
        except Exception as error:  # one failing variant must not hide the others
            row.update(status=runner.classify(error), error=f"{type(error).__name__}: {error}"[:500])
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def relative_error(outputs: list, reference: list) -> float:
    """The largest ||a - b|| / max(||b||, ||B|| / 100) over the outputs or
    gradients, B being all of the reference's together: a gradient that is
    zero in exact arithmetic (the reduce 1x1's bias, which training-mode
    batch norm cancels) is rounding noise in both, and is measured against
    the whole gradient instead of against itself (in bfloat16 that noise is
    ~1e-4 of the whole: a thousandth would call it a 17% error)."""
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs against the reference's {len(reference)}")
    whole = float(np.sqrt(sum(np.sum(np.square(b)) for b in reference)))
    return max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-2 * whole, 1e-30))
               for a, b in zip(outputs, reference, strict=True))


def _aggregation_rows(timer, backend: str, batch: int, stage, dtype: str, mode: str, impls) -> list[dict]:
    from layers import aggregation, counting

    resolution, channels, groups = stage
    real_dtype = "bfloat16" if "bfloat16" in dtype else "float32"
    figures = counting.layer_figures("involution", impls[0], batch=batch, resolution=resolution, channels=channels,
                                     kernel_size=KERNEL_SIZE, stride=1, groups=groups, reduction_ratio=REDUCTION,
                                     dtype=dtype, mode=mode)
    tensors = _aggregation_inputs(backend, batch, resolution, channels, groups, KERNEL_SIZE, real_dtype, mode)
    reference = None
    rows = []
    for impl in impls:
        row = {"backend": backend, "layer": "aggregation", "implementation": impl, "resolution": resolution,
               "channels": channels, "groups": groups, "batch": batch, "dtype": real_dtype, "mode": mode,
               "what": "aggregation", "bytes": figures.bytes_aggregation}
        try:
            run, sync = _aggregation_step(backend, aggregation.get(impl).function(), tensors, KERNEL_SIZE, groups,
                                          mode)
            row.update(time_step(timer, run, sync), status="ok")
            row["gbytes_per_s"] = row["bytes"] / row["step_s"] / 1e9
            # The fast path against the portable one on the timed inputs.
            outputs = _to_numpy(run())
            if reference is None:
                reference = outputs
            row["rel_err_vs_" + impls[0]] = relative_error(outputs, reference)
        except Exception as error:
            row.update(status="error", error=f"{type(error).__name__}: {error}"[:500])
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _leaves(outputs) -> list:
    """The arrays of a step's result: one output, or nested gradients."""
    if isinstance(outputs, (tuple, list)):
        return [leaf for item in outputs for leaf in _leaves(item)]
    return [outputs]


def _to_numpy(outputs) -> list:
    result = []
    for out in _leaves(outputs):
        if hasattr(out, "detach"):
            out = out.detach().float().cpu().numpy()
        result.append(np.asarray(out, np.float64))
    return result


def _aggregation_inputs(backend, b, px, c, g, k, dtype, mode):
    """Random x, generated kernel and output gradient on the device."""
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(shape, np.float32) for shape in ((b, px, px, c), (b, px, px, g * k * k),
                                                                 (b, px, px, c))]
    if backend == "jax":
        import jax.numpy as jnp

        return [jnp.asarray(a, dtype) for a in host]
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tensors = [torch.tensor(a, device=device).to(getattr(torch, dtype)) for a in host]
    if mode == "training":
        tensors[0].requires_grad_(True)
        tensors[1].requires_grad_(True)
    return tensors


def _aggregation_step(backend, fn, tensors, k, g, mode):
    x, kernel, dy = tensors
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        if mode == "inference":
            f = jax.jit(lambda x, kernel: fn(x, kernel, k, 1, g))
        else:
            def loss(x, kernel):
                return jnp.sum(fn(x, kernel, k, 1, g).astype(jnp.float32) * dy.astype(jnp.float32))

            f = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return (lambda: f(x, kernel)), jax.block_until_ready
    import torch

    def sync(_):
        if x.is_cuda:
            torch.cuda.synchronize()

    if mode == "inference":
        def run():
            with torch.no_grad():
                return fn(x, kernel, k, 1, g)
    else:
        def run():
            return torch.autograd.grad(fn(x, kernel, k, 1, g), (x, kernel), dy)
    return run, sync


def _line(row: dict) -> str:
    what = f"{row['what']:<11} {row['implementation']:<9} {row['layer']:<10}"
    geometry = f"{row['resolution']}px c{row['channels']} g{row['groups']} {row['dtype']:<14} {row['mode']:<9}"
    if row["status"] != "ok":
        return f"{what} {geometry} {row['status']}: {row.get('error', '')[:200]}"
    extra = f" {row['gbytes_per_s']:7.0f} GB/s" if "gbytes_per_s" in row else ""
    extra += "".join(f" {key} {value:.1e}" for key, value in row.items() if key.startswith("rel_err"))
    return f"{what} {geometry} step {row['step_s'] * 1e3:8.3f} ms  latency {row['latency_s'] * 1e3:8.3f} ms{extra}"


# (label, involution dtype, mode, baseline layer, baseline dtype, limit): the
# fused layer's step time over the baseline's must be at most `limit`.
RATIO_TARGETS = (
    ("float32 forward / Conv2D (TF32)", "float32", "inference", "conv2d", 0.33),
    ("float32 forward / DepthwiseConv2D", "float32", "inference", "depthwise", 1.0),
    ("bfloat16 forward / Conv2D bf16", "mixed_bfloat16", "inference", "conv2d", 0.5),
    ("float32 fwd+bwd / Conv2D (TF32)", "float32", "training", "conv2d", 0.7),
)
# (aggregation dtype, fraction of the bandwidth it must reach)
BANDWIDTH_TARGETS = (("float32", 0.65), ("bfloat16", 0.50))
FLOOR_TARGET = 0.40  # the fused float32 inference layer: its floor over its time
# A fused layer whose outputs (gradients in training) differ from the
# reference layer's by more than this (relative norm) is wrong, and meets no
# target. Rounding: TF32 is allowed in both (~1e-3); bfloat16 gradients differ
# by up to 1.5%, and 5% where one is the noise of a zero gradient (the CPU
# rehearsal, PERF.md section 20). A wrong kernel is off by O(1).
WITHIN = {"float32": 1e-2, "mixed_bfloat16": 1e-1}


# A row's timed rounds of step_s, for the ratios' intervals; not written to the CSV.
ROUNDS = "step_rounds_s"


def _ratio(mine: dict | None, theirs: dict | None) -> tuple[float | None, float, float]:
    """mine's step over theirs, and its 95% interval (the bootstrap of both
    rows' rounds, within this one process)."""
    from bench import intervals

    if not (mine and theirs and mine.get("step_s") and theirs.get("step_s")):
        return None, math.nan, math.nan
    low, high = intervals.ratio_interval(mine.get(ROUNDS) or [], theirs.get(ROUNDS) or [])
    return mine["step_s"] / theirs["step_s"], low, high


def _rate(row: dict | None, work: float | None) -> tuple[float | None, float, float]:
    """work / step_s (a bandwidth, or a fraction of the floor's time) and its
    interval from the step's: the slowest end of the step's gives the low end."""
    if not (row and work and row.get("step_s")):
        return None, math.nan, math.nan
    slowest, fastest = row.get("step_ci_high_s"), row.get("step_ci_low_s")
    return work / row["step_s"], work / slowest if slowest else math.nan, work / fastest if fastest else math.nan


def wrong(row: dict | None) -> str | None:
    """Why a layer row's outputs are wrong, or None (also when unchecked)."""
    for key, value in (row or {}).items():
        if key.startswith("rel_err_vs_") and value is not None and not value <= WITHIN[row["dtype"]]:
            return f"wrong: {key} {value:.1e} > {WITHIN[row['dtype']]:g}"
    return None


def target_table(rows: list[dict], fused: list[str], bandwidth: float | None) -> list[dict]:
    """One line per (stage, fused implementation, target): the measured ratio
    or fraction, its 95% interval (`low`, `high`: from the rounds of this one
    process), whether it holds (`holds`: the measured value meets the target)
    and whether its whole interval does (`holds_95`). An implementation that
    generates its kernel on chip is judged on the aggregation it trains with."""
    from layers import aggregation

    def find(what, layer, impl, dtype, mode, stage):
        for row in rows:
            if (row["what"], row["layer"], row["implementation"], row["dtype"], row["mode"]) == (
                    what, layer, impl, dtype, mode) and (row["resolution"], row["channels"], row["groups"]) == stage:
                return row if row["status"] == "ok" else None
        return None

    def step(row):
        return row.get("step_s") if row else None

    lines = []
    stages = sorted({(r["resolution"], r["channels"], r["groups"]) for r in rows}, reverse=True)
    for stage in stages:
        name = f"{stage[0]} px C {stage[1]} G {stage[2]}"
        for impl in fused:
            def line(target, measured, detail, at_most=None, at_least=None, problem=None, impl=impl, name=name):
                value, low, high = measured
                if value is None or problem:
                    holds = holds_95 = False
                elif at_most is not None:
                    holds, holds_95 = value <= at_most, high <= at_most  # NaN (no interval): not at 95%
                else:
                    holds, holds_95 = value >= at_least, low >= at_least
                lines.append({"stage": name, "implementation": impl, "target": target, "measured": value,
                              "low": low, "high": high, "holds": holds, "holds_95": holds_95,
                              "detail": detail + (f" ({problem})" if problem else "")})

            for label, dtype, mode, baseline, limit in RATIO_TARGETS:
                mine_row = find("layer", "involution", impl, dtype, mode, stage)
                theirs_row = find("layer", baseline, "keras", dtype, mode, stage)
                line(f"{label} <= {limit}", _ratio(mine_row, theirs_row),
                     f"{_ms(step(mine_row))} vs {_ms(step(theirs_row))} ms", at_most=limit, problem=wrong(mine_row))
            aggregator = aggregation.get(impl).trains_as or impl
            for dtype, limit in BANDWIDTH_TARGETS:
                agg = find("aggregation", "aggregation", aggregator, dtype, "inference", stage)
                line(f"aggregation {dtype} forward >= {limit:.0%} of bandwidth",
                     _rate(agg, agg["bytes"] / bandwidth if agg and agg.get("bytes") and bandwidth else None),
                     (f"{agg['gbytes_per_s']:.0f} GB/s" if agg else "not measured")
                     + (f" (the aggregation of {aggregator!r})" if aggregator != impl else ""), at_least=limit)
            layer = find("layer", "involution", impl, "float32", "inference", stage)
            floor = layer["bytes_min"] / bandwidth if layer and layer.get("bytes_min") and bandwidth else None
            line(f"fused float32 forward layer >= {FLOOR_TARGET:.0%} of its floor", _rate(layer, floor),
                 f"floor {_ms(floor)} ms (input and output once) vs {_ms(step(layer))} ms", at_least=FLOOR_TARGET,
                 problem=wrong(layer))
    return lines


def _ms(seconds):
    return f"{seconds * 1e3:.3f}" if seconds else "-"


def markdown(lines: list[dict]) -> str:
    out = ["| stage | implementation | target | measured | 95% interval | holds | at 95% | times |",
           "|---|---|---|---|---|---|---|---|"]
    for line in lines:
        measured = f"{line['measured']:.2f}" if line["measured"] is not None else "-"
        interval = f"{line['low']:.2f}–{line['high']:.2f}" if line["low"] == line["low"] else "-"  # NaN: none
        out.append(f"| {line['stage']} | {line['implementation']} | {line['target']} | {measured} | {interval} "
                   f"| {'yes' if line['holds'] else 'no'} | {'yes' if line['holds_95'] else 'no'} "
                   f"| {line['detail']} |")
    return "\n".join(out)


def _stages(text: str):
    try:
        stages = [tuple(int(v) for v in item.split(":")) for item in text.split(",")]
    except ValueError:
        stages = []
    if not stages or any(len(s) != 3 or min(s) < 1 or s[1] % s[2] for s in stages):
        raise argparse.ArgumentTypeError(
            "--stages takes RESOLUTION:CHANNELS:GROUPS[,...] with GROUPS dividing CHANNELS, e.g. 56:64:4. "
            f"Received: --stages={text}")
    return stages


def _some_of(option: str, allowed: tuple[str, ...]):
    """An argparse type: a comma-separated list of some of `allowed`."""
    def parse(text: str) -> list[str]:
        chosen = [item.strip() for item in text.split(",")]
        if not set(chosen) <= set(allowed):
            raise argparse.ArgumentTypeError(
                f"{option} takes some of {','.join(allowed)}, comma-separated. Received: {option}={text}")
        return chosen
    return parse


def _precompile(cases: list, workers: int, cache_dir: Path, seconds: float) -> str:
    """`bench.compile_cache.precompile` for the layer cases (TF32 allowed, as
    every case here), its case list and worker logs in a folder of their own
    that is removed afterwards: the output folder keeps three files a
    backend, which the GPU tool brings back (eight at most). The summary line,
    followed by the cases a worker could not compile (the timing compiles
    those itself and records their error)."""
    import tempfile

    from bench import compile_cache

    with tempfile.TemporaryDirectory(prefix="targets-precompile-") as folder:
        line = compile_cache.precompile(cases, workers, cache_dir, Path(folder), timeout_s=seconds, tf32=True)
        failed = [text for log in sorted(Path(folder).glob(compile_cache.LOG_FILE.format(index="*")))
                  for text in log.read_text(errors="replace").splitlines() if text.startswith("failed ")]
    return "\n".join([line.replace(f"see {compile_cache.LOG_FILE.format(index='*')}", "listed below"), *failed])


def main(argv: list[str] | None = None) -> int:
    parser = command_line.Parser(prog="python -m bench.targets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("targets-out"), help="folder for targets-<backend>.csv/.md")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--stages", type=_stages, default=list(STAGES), help="RES:C:G[,...]")
    parser.add_argument("--time", type=float, default=0.5,
                        help="seconds of timed rounds per case at most (rounds stop at +-2%% precision)")
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--l2", choices=timing.L2_MODES, default="cold",
                        help="flush the L2 before each timed step (cold, the default) or not")
    parser.add_argument("--modes", type=_some_of("--modes", MODES), default=list(MODES),
                        help=f"some of {','.join(MODES)} (default: both)")
    parser.add_argument("--dtypes", type=_some_of("--dtypes", ALL_DTYPES), default=list(DTYPES),
                        help=f"Keras dtype policies, some of {','.join(ALL_DTYPES)} (default: {','.join(DTYPES)})")
    parser.add_argument("--impls", default=None, help="involution implementations (default: fused + portable)")
    parser.add_argument("--jit", choices=("default", "on", "off"), default="default",
                        help="compile the layer steps (default: as Keras does: jax.jit, eager PyTorch)")
    parser.add_argument("--precompile", type=int, default=0, metavar="N",
                        help="first compile the layer cases in N processes into the compilers' persistent "
                             "caches (XLA and jax-triton's; Triton's), then time them with code loaded from "
                             "there (default 0: off)")
    parser.add_argument("--precompile-time", type=float, default=300.0, metavar="SECONDS",
                        help="with --precompile: stop the workers after SECONDS and start timing (default 300)")
    parser.add_argument("--compile-cache", type=Path, default=None, metavar="DIR",
                        help="compile through persistent caches under DIR (default with --precompile: "
                             "~/.cache/involution-bench/compilation)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.min_rounds < 1 or args.time <= 0:
        parser.error(f"--batch, --min-rounds and --time must be positive. Received: --batch={args.batch} "
                     f"--min-rounds={args.min_rounds} --time={args.time}")
    if args.precompile < 0 or args.precompile_time <= 0:
        parser.error(f"--precompile takes a number of processes (0: off) and --precompile-time a positive number "
                     f"of seconds. Received: --precompile={args.precompile} --precompile-time={args.precompile_time}")
    if message := keras_backend.problem():
        parser.error(message)
    from bench.rundir import RunDirError, writable_folder

    try:  # before anything is measured
        writable_folder(args.out, "--out")
        if args.compile_cache:
            writable_folder(args.compile_cache, "--compile-cache")
    except RunDirError as error:
        parser.error(str(error))

    import keras
    import pandas as pd

    from bench import backends, machine
    from bench.cases import DEFAULT_JIT
    from layers import aggregation, counting

    runner = backends.current()
    backend = runner.name
    fused = fused_implementations(backend)
    if not fused or backend == "tensorflow":
        parser.error("the fused kernels run on the jax and torch backends; set KERAS_BACKEND=jax or "
                     f"KERAS_BACKEND=torch. Received: KERAS_BACKEND={backend}")
    try:
        variant = _kernel_variant(backend)  # read once; a bad switch: one line now, not at the first case
    except ValueError as error:
        parser.error(str(error))
    impls = args.impls.split(",") if args.impls else [*fused, *portable_implementations(backend)]
    for impl in impls:
        if impl not in aggregation.names(backend):
            parser.error(f"--impls: {impl!r} does not run on {backend}; use some of {aggregation.names(backend)}. "
                         f"Received: --impls={args.impls}")
    if args.l2 == "cold" and runner.device_kind() != "gpu":
        args.l2 = "warm"  # nothing to flush without a GPU (tests, interpreters)
    jit = DEFAULT_JIT[backend] if args.jit == "default" else args.jit == "on"
    cached = bool(args.precompile or args.compile_cache)
    if cached:  # before anything compiles
        from bench import compile_cache

        cache_dir = args.compile_cache or compile_cache.DEFAULT_DIR
        print(f"bench.targets: {compile_cache.enable(cache_dir, backend)}", flush=True)
    precision = runner.configure(tf32=True)
    device_name = runner.device_name()
    timer = timing.for_runner(runner, args.l2, args.time, min_rounds=args.min_rounds)
    print(f"bench.targets: {backend} on {device_name} ({runner.device_kind()}), keras {keras.__version__}, "
          f"{precision}, layer steps {'compiled' if jit else 'eager'}; {timer.source()}", flush=True)
    rows: list[dict] = []
    if args.precompile:
        cases = [case for stage in args.stages for dtype in args.dtypes for mode in args.modes
                 for case in layer_cases(args.batch, stage, dtype, mode, impls, jit) if runner.compiles(case)]
        print(f"bench.targets: {_precompile(cases, args.precompile, cache_dir, args.precompile_time)}", flush=True)
    csv_path = args.out / f"targets-{backend}.csv"

    def save():  # after every group of rows: a killed run keeps what it measured
        frame = pd.DataFrame(rows).drop(columns=ROUNDS, errors="ignore")
        frame["device_name"] = device_name
        frame["precision"] = precision
        for key, value in variant.items():  # how the fused kernels were built, the same for every row
            frame[key] = value
        frame.to_csv(csv_path, index=False)

    for stage in args.stages:
        resolution, channels, groups = stage
        for dtype in args.dtypes:
            for mode in args.modes:
                layer_rows = _layer_rows(runner, timer, backend, args.batch, stage, dtype, mode, impls, jit, cached)
                for row in layer_rows:
                    if row["layer"] == "involution":
                        row["bytes_min"] = counting.layer_figures(
                            "involution", row["implementation"], batch=args.batch, resolution=resolution,
                            channels=channels, kernel_size=KERNEL_SIZE, stride=1, groups=groups,
                            reduction_ratio=REDUCTION, dtype=dtype, mode=mode).bytes_min
                rows += layer_rows
                # the portable implementation first: the fused one is checked against it; an
                # implementation generating on chip aggregates with another's kernel (trains_as)
                agg_impls = sorted((i for i in impls if not aggregation.get(i).materialises_patches
                                    and not aggregation.get(i).generates),
                                   key=lambda i: aggregation.get(i).fused)
                rows += _aggregation_rows(timer, backend, args.batch, stage, dtype, mode, agg_impls)
                save()
    bandwidth = machine.peaks(device_name, "float32", True)["peak_bandwidth"]
    lines = target_table(rows, fused, bandwidth)
    table = markdown(lines)
    header = (f"{backend} on {device_name}; batch {args.batch}, K 7; {precision}; jit {jit}; {timer.source()}; "
              + (f"datasheet bandwidth {bandwidth / 1e9:.0f} GB/s" if bandwidth else "no bandwidth figure")
              + "; 95% intervals from the rounds of this one process (the variation between processes is not in "
                "them); 'at 95%': the whole interval meets the target")
    (args.out / f"targets-{backend}.md").write_text(header + "\n\n" + table + "\n")
    print(header)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
