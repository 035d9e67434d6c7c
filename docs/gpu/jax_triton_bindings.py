"""Lower the JAX `triton` and `triton_fused` layers for CUDA through jax-triton
with jaxlib's own CUDA Triton bindings (the jax-cuda plugin's `_triton`), on a
machine without a GPU: only the device query (`get_compute_capability`) is
stood in for. `bench.kernel_resources` stands in for all of the bindings; this
checks that jax-triton's calls fit the real ones of the installed JAX (kernel,
call and autotuned-call constructors, parameters, `to_proto`), as the GPU
machine's JAX will receive them. Run by `docs/gpu/rehearse.sh bindings`:

    KERAS_BACKEND=jax python docs/gpu/jax_triton_bindings.py [--arch 90]
"""

from __future__ import annotations

import argparse
import sys
from unittest import mock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability as major*10+minor")
    args = parser.parse_args(argv)
    from jax._src.lib import gpu_triton

    if not hasattr(gpu_triton, "TritonKernel"):
        print("error: jaxlib's CUDA Triton bindings are not installed; install the jax-cuda plugin of this "
              "JAX (pip install jax-cuda13-plugin==<the JAX version>)", file=sys.stderr)
        return 2
    from bench import kernel_resources as kr
    from layers.aggregation import triton_jax

    with mock.patch.object(gpu_triton, "get_compute_capability", lambda device: args.arch), \
            mock.patch.object(triton_jax, "_interpret", lambda: False):
        for implementation in ("triton", "triton_fused"):
            for mode in ("inference", "training"):
                for dtype in ("float32", "mixed_bfloat16"):
                    case = kr.KernelCase(implementation, 28, 128, 8, dtype=dtype, mode=mode)
                    text, seconds = kr._lowered(case)
                    print(f"{implementation} {mode} {dtype}: {text.count('triton_kernel_call')} jax-triton "
                          f"calls built by the real bindings, lowered in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
