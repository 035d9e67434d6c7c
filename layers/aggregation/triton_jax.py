"""`triton` and `triton_fused` on JAX: the Triton kernels of `triton_kernels`
(the ones PyTorch runs) called from JAX.

On a GPU each kernel is a `jax_triton.triton_call`: jax-triton compiles it
with Triton when the program is lowered and XLA launches it as a custom call
inside the jitted step, so JAX runs Triton's kernels as they are instead of
Pallas' lowering of its own (Pallas ran 3-4x slower than Triton with the same
algorithm on the H100, docs/PERF.md section 5). Autotuned kernels are handed
over with their Autotuner: jax-triton compiles every tile configuration and
XLA times them at the first run.

jax-triton only imports on a JAX built with GPU support. On a CPU backend the
same kernels run in Triton's interpreter inside a `jax.pure_callback`; the
interpreter takes PyTorch tensors, so this needs `torch` (the `jax` test
environment installs its CPU build). Arguments go by name to the interpreter
and in signature order to jax-triton; `bench.kernel_resources` lowers the
jax-triton path for CUDA on any machine and CI checks both.

The fused kernel's reduce matmul runs with `tl.dot` at the precision of JAX's
matmuls: IEEE float32 when `jax_default_matmul_precision` is "highest" or
"float32", TF32 otherwise (JAX's default on GPUs; the suite pins it per run,
see bench/backends/jax.py). In the interpreter everything is float32 NumPy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import jax
import numpy as np

from layers.aggregation import jax_vjp
from layers.aggregation import triton_kernels as tk
from layers.aggregation._common import Geometry, input_channel_block

__all__ = ["aggregate", "aggregate_hidden", "involution"]


def _interpret() -> bool:
    return jax.default_backend() == "cpu"


def _runtime_parameters(kernel) -> list[str]:
    """The kernel's non-constexpr parameters in signature order."""
    jit = kernel.fn if tk.autotuned(kernel) else kernel
    return [param.name for param in jit.params if not param.is_constexpr]


def _not_the_key_warning(record: logging.LogRecord) -> bool:
    """jax-triton warns, at every lowering, that an autotuned kernel's key
    leaves out integer arguments. Here they are image sizes that the key's
    pixel count and channels already decide, and XLA tunes each call site
    once anyway: the warning says nothing to act on."""
    return not record.getMessage().startswith("Auto-tuning key does not include all scalar arguments")


# jax-triton compiles every kernel while a program is lowered, before JAX's
# persistent cache is consulted, and keeps the result in process memory only:
# each sweep process, and each `--precompile` worker, would compile them all
# again. With a directory set (bench.compile_cache does, under
# --compile-cache), its compile step keeps the PTX on disk, keyed by the
# kernel's Triton IR, the options, the target and Triton's version.
_kernel_cache: Path | None = None
CACHE_HIT_EVENT = "/involution_bench/jax_triton/cache_hits"  # jax.monitoring events, counted by
CACHE_MISS_EVENT = "/involution_bench/jax_triton/cache_misses"  # bench.compile_cache as JAX's own


def cache_kernels(directory: str | Path | None) -> None:
    """Keep the kernels jax-triton compiles in `directory` (None: do not)."""
    global _kernel_cache
    _kernel_cache = Path(directory) if directory is not None else None
    if _kernel_cache is not None:
        _kernel_cache.mkdir(parents=True, exist_ok=True)


def _with_disk_cache(triton_lib) -> None:
    """Wrap jax-triton's compile step (`compile_ttir_inplace`, which turns a
    kernel's Triton IR into PTX) with the directory of `cache_kernels`."""
    compile_ir = triton_lib.compile_ttir_inplace
    if getattr(compile_ir, "involution_disk_cache", False):
        return

    def compile_ttir_inplace(ttir, backend, options, compute_capability, platform):
        if _kernel_cache is None:
            return compile_ir(ttir, backend, options, compute_capability, platform)
        import triton

        text = f"{triton.__version__}\n{platform}\n{compute_capability}\n{options!r}\n{ttir}"
        path = _kernel_cache / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
        if path.is_file():
            stored = json.loads(path.read_text())
            jax.monitoring.record_event(CACHE_HIT_EVENT)
            return triton_lib.CompilationResult(binary=stored["binary"], name=stored["name"],
                                                shared_mem_bytes=stored["shared_mem_bytes"], ttgir=None, llir=None)
        result = compile_ir(ttir, backend, options, compute_capability, platform)
        jax.monitoring.record_event(CACHE_MISS_EVENT)
        partial = path.with_suffix(f".{os.getpid()}.tmp")  # whole files only: workers write concurrently
        partial.write_text(json.dumps({"binary": result.binary, "name": result.name,
                                       "shared_mem_bytes": result.shared_mem_bytes}))
        os.replace(partial, path)
        return result

    compile_ttir_inplace.involution_disk_cache = True
    triton_lib.compile_ttir_inplace = compile_ttir_inplace


def _compiled_call(name: str, geo: Geometry, pixels: int, programs: int, inputs: dict, outputs: dict,
                   arguments: dict) -> tuple:
    """jax-triton: inputs and integers in the kernel's order, the outputs
    last (its convention, which the kernels' signatures follow), constants
    as keywords."""
    import jax_triton
    from jax_triton import triton_lib

    _with_disk_cache(triton_lib)
    absl = logging.getLogger("absl")
    if _not_the_key_warning not in absl.filters:
        absl.addFilter(_not_the_key_warning)

    kernel = getattr(tk.compiled(False), name)
    order = _runtime_parameters(kernel)
    if order[len(order) - len(outputs):] != list(outputs):
        raise TypeError(f"{name}: jax-triton appends the outputs {list(outputs)} to the arguments, so they must be "
                        f"the kernel's last non-constexpr parameters. Received: parameters {order}")
    positional = [inputs[p] if p in inputs else arguments[p] for p in order[: len(order) - len(outputs)]]
    constants = {key: value for key, value in arguments.items() if key not in order}
    result = jax_triton.triton_call(
        *positional, kernel=kernel, out_shape=list(outputs.values()), grid=tk.grid(kernel, geo, pixels, programs),
        name=name, enable_fp_fusion=tk.FP_FUSION, **tk.constants(kernel, geo), **constants)
    return tuple(result)


def _to_torch(array: np.ndarray):
    import torch

    if array.dtype == np.dtype(jax.numpy.bfloat16):  # NumPy has no bfloat16 of its own: go through its bits
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))


def _to_numpy(tensor) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(jax.numpy.bfloat16)
    return tensor.numpy()


def _interpreted(name: str, geo: Geometry, pixels: int, programs: int, input_names: tuple, outputs: dict,
                 arguments: dict, *arrays) -> tuple:
    """Triton's interpreter on the host, arguments by name as on PyTorch."""
    try:
        import torch
    except ModuleNotFoundError:
        raise RuntimeError("On a CPU the 'triton' implementations run in Triton's interpreter, which takes PyTorch "
                           "tensors, and torch is not installed: pip install torch (its CPU build suffices), or use "
                           "implementation='pallas'. Received: backend=jax on cpu") from None

    torch_dtype = {np.dtype(jax.numpy.bfloat16): torch.bfloat16, np.dtype("float32"): torch.float32,
                   np.dtype("float16"): torch.float16}
    tensors = {n: _to_torch(np.asarray(a)) for n, a in zip(input_names, arrays, strict=True)}
    results = {n: torch.empty(s.shape, dtype=torch_dtype[np.dtype(s.dtype)]) for n, s in outputs.items()}
    tk.launch(getattr(tk.compiled(True), name), geo, pixels, programs, **tensors, **results, **arguments)
    return tuple(_to_numpy(results[n]) for n in outputs)


def _call(name: str, geo: Geometry, pixels: int, programs: int, inputs: dict, outputs: dict, **arguments) -> tuple:
    """Run kernel `name` of `tk.Kernels` over (pixel tiles, `programs`):
    `inputs` and `outputs` (jax.ShapeDtypeStruct) by parameter name, the
    integers and constants in `arguments`. Returns the outputs in order."""
    tk.check_size("triton" if name in tk.AGGREGATION else "triton_fused",
                  *(a.shape for a in inputs.values()), *(o.shape for o in outputs.values()))
    arguments = {**tk.sizes(geo, hints=True), **arguments}  # hints: jax-triton does not specialise integers
    if not _interpret():
        return _compiled_call(name, geo, pixels, programs, inputs, outputs, arguments)
    callback = functools.partial(_interpreted, name, geo, pixels, programs, tuple(inputs), outputs, arguments)
    return tuple(jax.pure_callback(callback, tuple(outputs.values()), *inputs.values()))


def _shape(rows: int, columns: int, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((rows, columns), dtype)


def _forward(geo: Geometry, x2, k2):
    (out,) = _call("forward", geo, geo.out_pixels, geo.groups * geo.channel_blocks, dict(x_ptr=x2, k_ptr=k2),
                   dict(o_ptr=_shape(geo.out_pixels, geo.channels, x2.dtype)), n_pix=geo.out_pixels,
                   N_CBLK=geo.channel_blocks)
    return out


def _kernel_grad(geo: Geometry, x2, dy2, dtype):
    written = jax.numpy.float32 if tk.kernel_grad_in_float32(geo) else dtype
    (dk,) = _call("kernel_grad", geo, geo.out_pixels, geo.groups, dict(x_ptr=x2, dy_ptr=dy2),
                  dict(dk_ptr=_shape(geo.out_pixels, geo.generated_channels, written)), n_pix=geo.out_pixels)
    return dk.astype(dtype)


def _input_grad(geo: Geometry, k2, dy2, dtype):
    (dx,) = _call("input_grad", geo, geo.phase_pixels, geo.groups * geo.channel_blocks, dict(k_ptr=k2, dy_ptr=dy2),
                  dict(dx_ptr=_shape(geo.in_pixels, geo.channels, dtype)), n_pix=geo.phase_pixels,
                  N_CBLK=geo.channel_blocks)
    return dx


def _dot_precision() -> str:
    if _interpret():
        return "ieee"
    precision = str(jax.config.jax_default_matmul_precision or "").lower()
    return "ieee" if precision in ("highest", "float32") else "tf32"


def _fused(geo: Geometry, reduced: int, from_hidden: bool, x2, xg2, w_reduce, b_reduce, w_span, b_span):
    (out,) = _call("fused", geo, geo.out_pixels, geo.groups * geo.channel_blocks,
                   dict(x_ptr=x2, xg_ptr=xg2, wr_ptr=w_reduce, br_ptr=b_reduce, ws_ptr=w_span, bs_ptr=b_span),
                   dict(o_ptr=_shape(geo.out_pixels, geo.channels, x2.dtype)), n_pix=geo.out_pixels,
                   N_CBLK=geo.channel_blocks, DOT_PRECISION=_dot_precision(), FROM_HIDDEN=from_hidden,
                   BLOCK_CIN=input_channel_block(geo.channels), **tk.bottleneck(reduced, hints=True))
    return out


def _generation_grad(geo: Geometry, reduced: int, x2, dy2, h2, w_span):
    tiles = tk.tiles(tk.SOURCES.generation_grad, geo, geo.out_pixels, geo.block_p)
    gkk = geo.generated_channels
    d_hidden, d_w, d_b = _call(
        "generation_grad", geo, geo.out_pixels, 1, dict(x_ptr=x2, dy_ptr=dy2, h_ptr=h2, ws_ptr=w_span),
        dict(dh_ptr=_shape(geo.out_pixels, reduced, h2.dtype),
             dws_ptr=_shape(tiles * reduced, gkk, np.float32),  # each pixel tile's share
             dbs_ptr=_shape(tiles, gkk, np.float32)),
        n_pix=geo.out_pixels, **tk.bottleneck(reduced, hints=True))
    return d_hidden, d_w.reshape(tiles, reduced, gkk).sum(0), d_b.sum(0)


def _input_grad_generated(geo: Geometry, reduced: int, h2, w_span, b_span, dy2, dtype):
    (dx,) = _call("input_grad_generated", geo, geo.phase_pixels, geo.groups * geo.channel_blocks,
                  dict(h_ptr=h2, ws_ptr=w_span, bs_ptr=b_span, dy_ptr=dy2),
                  dict(dx_ptr=_shape(geo.in_pixels, geo.channels, dtype)), n_pix=geo.phase_pixels,
                  N_CBLK=geo.channel_blocks, **tk.bottleneck(reduced, hints=True))
    return dx


aggregate = jax_vjp.aggregation(jax_vjp.AggregationCalls(_forward, _kernel_grad, _input_grad))
aggregate_hidden, involution = jax_vjp.generation(
    jax_vjp.GenerationCalls(_fused, _generation_grad, _input_grad_generated))
