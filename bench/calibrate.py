"""Check the suite's timer against work of known size: `python -m bench.calibrate`.

Times a device-to-device copy of `--mib` MiB (read once, written once) with
the timer every benchmark uses (`bench.timing.for_runner`), L2 warm and cold,
and prints the latency, the device time and the bandwidth each implies. A copy
far larger than the L2 runs at the memory's bandwidth whatever the cache; on a
GPU the device time of a large copy should therefore come close to the
datasheet bandwidth (`bench.machine.peaks`), and the latency exceed it by the
launch and the wait. One line per measurement; `--json` for one JSON line each.
"""

from __future__ import annotations

import json
import sys

from bench import command_line, keras_backend


def _copy_step(backend: str, nbytes: int):
    """run(): one copy of nbytes on the device (asynchronous where the device is)."""
    if backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        source = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        target = torch.empty_like(source)
        return lambda: target.copy_(source)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        source = jnp.ones((nbytes // 4,), jnp.float32)
        copy = jax.jit(lambda a: a * 1.0)
        jax.block_until_ready(copy(source))
        return lambda: copy(source)
    import tensorflow as tf

    source = tf.ones((nbytes // 4,), tf.float32)
    copy = tf.function(lambda: tf.identity(source * 1.0))
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = command_line.Parser(prog="python -m bench.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the copied array (MiB)")
    parser.add_argument("--time", type=float, default=1.0, help="seconds of timed rounds per measurement at most")
    parser.add_argument("--json", action="store_true", help="print one JSON line per measurement")
    args = parser.parse_args(argv)
    if args.mib < 1 or args.time <= 0:
        parser.error(f"--mib and --time must be positive. Received: --mib={args.mib} --time={args.time}")
    if message := keras_backend.problem():
        parser.error(message)

    from bench import backends, machine, timing

    runner = backends.current()
    device_name = runner.device_name()
    nbytes = args.mib * 2**20
    run = _copy_step(runner.name, nbytes)
    sync = runner.sync_function()
    bandwidth = machine.peaks(device_name, "float32", False)["peak_bandwidth"]
    modes = ("warm", "cold") if runner.device_kind() == "gpu" else ("warm",)
    for l2 in modes:
        timer = timing.for_runner(runner, l2, args.time, min_rounds=10)
        warm = timing.warm_up(lambda: sync(run()))
        measured = timer.measure(run, warm.estimate)
        fields = measured.fields()
        device = fields["device_median_s"]
        moved = 2 * nbytes  # read + write
        row = {"backend": runner.name, "device_name": device_name, "l2": l2, "bytes_moved": moved,
               "latency_s": measured.latency.median, "device_s": device,
               "latency_gb_s": moved / measured.latency.median / 1e9,
               "device_gb_s": moved / device / 1e9 if device else None,
               "datasheet_gb_s": bandwidth / 1e9 if bandwidth else None,
               "device_time_source": fields["device_time_source"]}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            device_text = (f"device {device * 1e3:.3f} ms = {row['device_gb_s']:.0f} GB/s" if device
                           else fields["device_time_source"])
            peak = f" (datasheet {row['datasheet_gb_s']:.0f} GB/s)" if bandwidth else ""
            print(f"calibrate {runner.name} {device_name} L2 {l2}: copy of {args.mib} MiB: latency "
                  f"{measured.latency.median * 1e3:.3f} ms = {row['latency_gb_s']:.0f} GB/s; {device_text}{peak}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
