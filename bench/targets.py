"""Check the fused-kernel targets (issue 7) on the current backend.

    KERAS_BACKEND=jax   python -m bench.targets --out DIR
    KERAS_BACKEND=torch python -m bench.targets --out DIR

At the RedNet stage configurations (batch 64, K = 7, 16 channels per group,
reduction 4) it times the whole Involution layer with the backend's fused
implementation (and the portable ones beside it) against the same backend's
Keras Conv2D(C, 7) and DepthwiseConv2D(7), float32 with TF32 allowed and
mixed bfloat16, forward and forward + backward; then the aggregation alone,
whose bytes (input + generated kernel + output, each once) over its time give
the bandwidth it reaches.

Two times per case, both after warm-up and both ending each timed round with
the device wait:
- `step_s`: rounds of n steps issued back to back, divided by n: the device's
  time per step when the host keeps ahead of it (the figure the targets use);
- `latency_s`: rounds of one step, as the sweep times them (host dispatch and
  the wait included).

Writes targets.csv (one row per timed case), targets.md (the target table)
and prints the table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STAGES = ((56, 64, 4), (28, 128, 8), (14, 256, 16))  # (resolution, channels, groups)
FUSED = {"jax": "pallas", "torch": "triton", "tensorflow": "xla"}
PORTABLE = ("shiftsum", "reference")
DTYPES = ("float32", "mixed_bfloat16")
MODES = ("inference", "training")


@dataclass(frozen=True)
class Timed:
    step_s: float
    latency_s: float
    steps_per_round: int


def time_step(run, sync, rounds: int, round_seconds: float = 0.02) -> Timed:
    from bench import timing

    def once():
        sync(run())

    warm = timing.warm_up(once, min_calls=5)
    latencies = []
    for _ in range(rounds):
        start = time.perf_counter()
        once()
        latencies.append(time.perf_counter() - start)
    n = max(1, math.ceil(round_seconds / max(warm.estimate, 1e-6)))
    per_step = []
    for _ in range(rounds):
        start = time.perf_counter()
        out = None
        for _ in range(n):
            out = run()
        sync(out)
        per_step.append((time.perf_counter() - start) / n)
    return Timed(statistics.median(per_step), statistics.median(latencies), n)


def _layer_rows(runner, backend: str, batch: int, stage, dtype: str, mode: str, rounds: int, impls,
                jit: bool) -> list[dict]:
    import keras

    from bench.cases import Case
    from bench.session import build_case

    resolution, channels, groups = stage
    rows = []
    variants = [("involution", impl) for impl in impls] + [("conv2d", "keras"), ("depthwise", "keras")]
    for layer, impl in variants:
        case = Case(layer, impl, 7, 1, groups, 4, resolution, channels, batch, dtype, mode, jit).normalised()
        row = {"backend": backend, "layer": layer, "implementation": impl, "resolution": resolution,
               "channels": channels, "groups": groups, "batch": batch, "dtype": dtype, "mode": mode,
               "jit": jit, "what": "layer"}
        try:
            module, x = build_case(case)
            cotangent = np.random.default_rng(1).standard_normal(x.shape).astype("float32")
            compute = keras.DTypePolicy(dtype).compute_dtype
            step = runner.prepare(case, module, x, cotangent, compute)
            timed = time_step(step.run, step.sync, rounds)
            row.update(step_s=timed.step_s, latency_s=timed.latency_s, steps_per_round=timed.steps_per_round,
                       status="ok")
        except Exception as error:  # one failing variant must not hide the others
            row.update(status=runner.classify(error), error=f"{type(error).__name__}: {error}"[:500])
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _aggregation_rows(backend: str, batch: int, stage, dtype: str, mode: str, rounds: int, impls) -> list[dict]:
    from layers import aggregation

    resolution, channels, groups = stage
    k = 7
    real_dtype = "bfloat16" if "bfloat16" in dtype else "float32"
    itemsize = 2 if real_dtype == "bfloat16" else 4
    pixels = batch * resolution * resolution
    # x and out: C values a pixel; the generated kernel: G*K*K.
    fwd_bytes = pixels * (2 * channels + groups * k * k) * itemsize
    # backward: read x, kernel, dy; write dx and d_kernel.
    bwd_bytes = pixels * (3 * channels + 2 * groups * k * k) * itemsize
    tensors = _aggregation_inputs(backend, batch, resolution, channels, groups, k, real_dtype, mode)
    reference = None
    rows = []
    for impl in impls:
        row = {"backend": backend, "layer": "aggregation", "implementation": impl, "resolution": resolution,
               "channels": channels, "groups": groups, "batch": batch, "dtype": real_dtype, "mode": mode,
               "what": "aggregation", "bytes": fwd_bytes if mode == "inference" else fwd_bytes + bwd_bytes}
        try:
            run, sync = _aggregation_step(backend, aggregation.get(impl).function(), tensors, k, groups, mode)
            timed = time_step(run, sync, rounds)
            row.update(step_s=timed.step_s, latency_s=timed.latency_s, steps_per_round=timed.steps_per_round,
                       gbytes_per_s=row["bytes"] / timed.step_s / 1e9, status="ok")
            # The fast path against the portable one on the timed inputs.
            outputs = _to_numpy(run())
            if reference is None:
                reference = outputs
            row["rel_err_vs_" + impls[0]] = max(
                float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)) for a, b in zip(outputs, reference,
                                                                                            strict=True))
        except Exception as error:
            row.update(status="error", error=f"{type(error).__name__}: {error}"[:500])
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _to_numpy(outputs) -> list:
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    result = []
    for out in outputs:
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


def target_table(rows: list[dict], fused: str, bandwidth: float | None) -> list[dict]:
    """One line per (stage, target): the measured ratio or bandwidth and whether it holds."""
    def t(layer, impl, dtype, mode, stage, what="layer"):
        for row in rows:
            if (row["what"], row["layer"], row["implementation"], row["dtype"], row["mode"]) == (
                    what, layer, impl, dtype, mode) and (row["resolution"], row["channels"], row["groups"]) == stage:
                return row.get("step_s") if row["status"] == "ok" else None
        return None

    lines = []
    stages = sorted({(r["resolution"], r["channels"], r["groups"]) for r in rows}, reverse=True)
    for stage in stages:
        name = f"{stage[0]} px C {stage[1]} G {stage[2]}"
        checks = [
            ("float32 forward / Conv2D (TF32)", t("involution", fused, "float32", "inference", stage),
             t("conv2d", "keras", "float32", "inference", stage), 0.5),
            ("float32 forward / DepthwiseConv2D", t("involution", fused, "float32", "inference", stage),
             t("depthwise", "keras", "float32", "inference", stage), 1.0),
            ("bfloat16 forward / Conv2D bf16", t("involution", fused, "mixed_bfloat16", "inference", stage),
             t("conv2d", "keras", "mixed_bfloat16", "inference", stage), 0.75),
            ("float32 fwd+bwd / Conv2D (TF32)", t("involution", fused, "float32", "training", stage),
             t("conv2d", "keras", "float32", "training", stage), 1.0),
            ("bfloat16 fwd+bwd / Conv2D bf16", t("involution", fused, "mixed_bfloat16", "training", stage),
             t("conv2d", "keras", "mixed_bfloat16", "training", stage), 1.0),
        ]
        for label, mine, theirs, limit in checks:
            ratio = mine / theirs if mine and theirs else None
            lines.append({"stage": name, "target": f"{label} <= {limit}", "measured": ratio,
                          "holds": ratio is not None and ratio <= limit,
                          "detail": f"{_ms(mine)} vs {_ms(theirs)} ms"})
        for dtype in ("float32", "bfloat16"):
            agg = [r for r in rows if r["what"] == "aggregation" and r["implementation"] == fused
                   and r["dtype"] == dtype and r["mode"] == "inference"
                   and (r["resolution"], r["channels"], r["groups"]) == stage and r["status"] == "ok"]
            fraction = agg[0]["gbytes_per_s"] * 1e9 / bandwidth if agg and bandwidth else None
            lines.append({"stage": name, "target": f"aggregation {dtype} forward >= 60% of bandwidth",
                          "measured": fraction, "holds": fraction is not None and fraction >= 0.6,
                          "detail": f"{agg[0]['gbytes_per_s']:.0f} GB/s" if agg else "not measured"})
    return lines


def _ms(seconds):
    return f"{seconds * 1e3:.3f}" if seconds else "-"


def markdown(lines: list[dict]) -> str:
    out = ["| stage | target | measured | holds | times |", "|---|---|---|---|---|"]
    for line in lines:
        measured = f"{line['measured']:.2f}" if line["measured"] is not None else "-"
        out.append(f"| {line['stage']} | {line['target']} | {measured} | {'yes' if line['holds'] else 'no'} "
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.targets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("targets-out"), help="folder for targets.csv/.md")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--stages", type=_stages, default=list(STAGES), help="RES:C:G[,...]")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--modes", default="inference,training")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--impls", default=None, help="involution implementations (default: fused + portable)")
    parser.add_argument("--jit", choices=("default", "on", "off"), default="default",
                        help="compile the layer steps (default: as Keras does: jax.jit, eager PyTorch)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.rounds < 1:
        parser.error(f"--batch and --rounds must be positive. Received: --batch={args.batch} --rounds={args.rounds}")

    import keras
    import pandas as pd

    from bench import backends, machine
    from bench.cases import DEFAULT_JIT
    from layers import aggregation

    runner = backends.current()
    backend = runner.name
    if backend not in ("jax", "torch"):
        parser.error("the fused kernels run on the jax and torch backends; set KERAS_BACKEND=jax or "
                     f"KERAS_BACKEND=torch. Received: KERAS_BACKEND={backend}")
    fused = FUSED[backend]
    impls = args.impls.split(",") if args.impls else [fused, *PORTABLE]
    for impl in impls:
        if impl not in aggregation.names(backend):
            parser.error(f"--impls: {impl!r} does not run on {backend}; use some of {aggregation.names(backend)}. "
                         f"Received: --impls={args.impls}")
    jit = DEFAULT_JIT[backend] if args.jit == "default" else args.jit == "on"
    precision = runner.configure(tf32=True)
    device_name = runner.device_name()
    print(f"bench.targets: {backend} on {device_name} ({runner.device_kind()}), keras {keras.__version__}, "
          f"{precision}, layer steps {'compiled' if jit else 'eager'}", flush=True)
    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / f"targets-{backend}.csv"

    def save():  # after every group of rows: a killed run keeps what it measured
        frame = pd.DataFrame(rows)
        frame["device_name"] = device_name
        frame["precision"] = precision
        frame.to_csv(csv_path, index=False)

    for stage in args.stages:
        for dtype in args.dtypes.split(","):
            for mode in args.modes.split(","):
                rows += _layer_rows(runner, backend, args.batch, stage, dtype, mode, args.rounds, impls, jit)
                # the portable implementation first: the fused one is checked against it
                agg_impls = sorted((i for i in impls if not aggregation.get(i).materialises_patches),
                                   key=lambda i: aggregation.get(i).fused)
                rows += _aggregation_rows(backend, args.batch, stage, dtype, mode, args.rounds, agg_impls)
                save()
    bandwidth = machine.peaks(device_name, "float32", True)["peak_bandwidth"]
    lines = target_table(rows, fused, bandwidth)
    table = markdown(lines)
    header = (f"{backend} on {device_name}; batch {args.batch}, K 7; {precision}; jit {jit}; datasheet bandwidth "
              f"{bandwidth / 1e9:.0f} GB/s" if bandwidth else f"{backend} on {device_name}; no bandwidth figure")
    (args.out / f"targets-{backend}.md").write_text(header + "\n\n" + table + "\n")
    print(header)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
