"""The fused implementations' GPU kernels, built on any machine.

    KERAS_BACKEND=torch python -m bench.kernel_resources [--sweep NAME] [--arch 90] [--tf32] [--kernels K,...]
                                                         [--out DIR]
    KERAS_BACKEND=jax   python -m bench.kernel_resources [--sweep NAME] [--out DIR]

Triton's and Pallas' interpreters run the kernels' loops on a CPU, not their
compilers: a kernel the interpreter accepts can still fail to build for a GPU,
and what it costs a GPU (registers, spills, occupancy) or the sweep (compile
seconds) is only known from the compiled code. No GPU is needed for either:

- PyTorch: the Triton kernels an Involution layer launches are captured from a
  real layer call (inference; training forward and backward) at the RedNet
  stage geometries of `bench.targets` (or at every involution layer case of a
  sweep, `--sweep`: what that sweep compiles), then compiled by Triton for a CUDA
  target (default sm_90, the H100's and H200's) in every tile configuration
  the autotuner would try. `cuobjdump`, shipped with Triton, reads each
  binary's registers per thread and stack frame (where spilled registers go);
  its SASS gives the local-memory loads and stores (the spill traffic) and the
  instruction count.
- JAX: each layer call is lowered for CUDA (`lowering_platforms`). For the
  Pallas kernels that runs Pallas' Triton lowering, the step that rejects
  what Triton cannot express; XLA makes PTX from it on the GPU, so no
  resource figures come from here. For `triton` and `triton_fused` it runs
  jax-triton, which compiles each Triton kernel to PTX in every autotuner
  tile while lowering; jaxlib's CUDA bindings it hands the result to are
  stood in for (`jax_triton_without_gpu`), recording each call's kernel,
  grid and integer arguments. The binaries are PyTorch's (`KERAS_BACKEND=torch`
  reports their registers and spills).

These are static figures of one compiler version (this machine's Triton, not
necessarily the GPU machine's), not timings: a spilling or low-occupancy
configuration is a reason to look, and the GPU's timer decides.

Writes kernel-resources-<backend>.csv (a row per kernel, geometry, dtype and
configuration) to --out and prints a summary.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

from bench import command_line
from bench.targets import DTYPES, KERNEL_SIZE, MODES, REDUCTION, STAGES

DEFAULT_ARCH = 90  # sm_90: H100 and H200


@dataclass(frozen=True)
class SMLimits:
    """Per-SM limits of one compute capability (CUDA C++ Programming Guide,
    "Technical Specifications per Compute Capability"; see docs/SOURCES.md)."""

    registers: int
    warps: int
    blocks: int
    shared_bytes: int  # usable by blocks, per SM
    reserved_shared_bytes: int  # the system's share of each block
    register_unit: int = 256  # registers are allocated to warps in units of this


SM_LIMITS = {
    80: SMLimits(registers=65536, warps=64, blocks=32, shared_bytes=164 * 1024, reserved_shared_bytes=1024),
    90: SMLimits(registers=65536, warps=64, blocks=32, shared_bytes=228 * 1024, reserved_shared_bytes=1024),
}


def occupancy(registers: int, warps: int, shared_bytes: int, arch: int) -> float | None:
    """Resident warps over the SM's maximum, as registers, shared memory and
    the block limit allow one kernel's blocks (None for an unknown arch)."""
    limits = SM_LIMITS.get(arch)
    if limits is None:
        return None
    unit = limits.register_unit
    per_warp = max(1, -(-registers * 32 // unit)) * unit
    blocks = min(limits.registers // (per_warp * warps), limits.blocks, limits.warps // warps)
    if shared_bytes:
        blocks = min(blocks, limits.shared_bytes // (shared_bytes + limits.reserved_shared_bytes))
    return blocks * warps / limits.warps


@dataclass(frozen=True)
class Launch:
    """One Triton kernel launch as the layer made it."""

    kernel: str
    jit: Any  # triton.runtime.jit.JITFunction
    configs: tuple  # the autotuner's triton.Config list; empty when not autotuned
    arguments: dict


def _cuda_kernels() -> list[tuple]:
    """[(kernel's Python function, JITFunction, autotune configs)] in the
    order of `triton_kernels.Kernels`, as built for CUDA (constructing them
    needs no GPU)."""
    from layers.aggregation import triton_kernels

    found = []
    for obj in triton_kernels.compiled.__wrapped__(False):
        configs = tuple(getattr(obj, "configs", ()))
        jit = obj.fn if configs else obj
        found.append((jit.fn, jit, configs))
    return found


class _Recorder:
    """Stands for an interpreted kernel: a launch is kept, not run (outputs
    stay uninitialised; only their shapes matter here)."""

    def __init__(self, fn, jit, configs, launches: list):
        self.fn, self.jit, self.configs, self.launches = fn, jit, configs, launches

    def __getitem__(self, grid):
        def launch(**arguments):
            self.launches.append(Launch(self.fn.__name__, self.jit, self.configs, arguments))

        return launch


@contextmanager
def _recording(launches: list) -> Iterator[None]:
    """Replace the interpreted Triton kernels by recorders."""
    from layers.aggregation import triton_kernels

    recorders = triton_kernels.Kernels(*(_Recorder(*kernel, launches) for kernel in _cuda_kernels()))
    with mock.patch.object(triton_kernels, "compiled", lambda interpret: recorders):
        yield


class KernelCase(NamedTuple):
    """One involution layer call whose kernels are built: what sets the
    compiled code (channels, groups, K, stride, dtype, mode) and the sizes."""

    implementation: str
    resolution: int
    channels: int
    groups: int
    kernel_size: int = KERNEL_SIZE
    stride: int = 1
    reduction_ratio: int = REDUCTION
    dtype: str = "float32"
    mode: str = "inference"


def rednet_cases(backend: str, stride: int = 1) -> list[KernelCase]:
    """The targets' cases: the backend's fused implementations at the RedNet
    stages, float32 and mixed bfloat16, inference and training; at another
    `stride` (RedNet's downsampling blocks use 2), those stages strided."""
    from bench.targets import fused_implementations

    return [KernelCase(impl, *stage, dtype=dtype, mode=mode)._replace(stride=stride)
            for impl in fused_implementations(backend) for stage in STAGES for dtype in DTYPES for mode in MODES]


def sweep_cases(sweep: str, backend: str) -> list[KernelCase]:
    """A sweep's involution layer cases that run Triton or Pallas kernels on
    a GPU (`auto` as it resolves there), whole networks left out."""
    from bench import sweeps
    from layers import aggregation
    from layers.aggregation import auto

    found = []
    for case in sweeps.load(sweep).cases(backend, "gpu"):
        if case.layer != "involution":
            continue
        impl = case.implementation
        if impl == "auto":
            import keras

            impl = auto.choose(backend, "gpu", case.mode, keras.DTypePolicy(case.dtype).compute_dtype)
        if aggregation.get(impl).fused and backend in aggregation.get(impl).backends:
            found.append(KernelCase(impl, case.resolution, case.channels, case.groups, case.kernel_size,
                                    case.stride, case.reduction_ratio, case.dtype, case.mode))
    return sorted(set(found))


def _layer(case: KernelCase):
    from layers.involution import Involution

    return Involution(case.kernel_size, strides=case.stride, groups=case.groups,
                      reduction_ratio=case.reduction_ratio, implementation=case.implementation, dtype=case.dtype)


def triton_launches(case: KernelCase) -> list[Launch]:
    """The Triton launches of one Involution layer call (PyTorch backend):
    forward in inference, forward and backward in training, batch 1 (the
    batch sets no compiled code: it is not specialised on)."""
    import torch

    layer = _layer(case)
    x = torch.zeros((1, case.resolution, case.resolution, case.channels), requires_grad=(case.mode == "training"))
    layer.build(tuple(x.shape))
    launches: list[Launch] = []
    with _recording(launches):
        if case.mode == "training":
            layer(x, training=True).float().sum().backward()
        else:
            with torch.no_grad():
                layer(x, training=False)
    return launches


@dataclass(frozen=True)
class Build:
    """One kernel compiled for one target and configuration."""

    kernel: str
    block_p: int
    block_c: int
    num_warps: int
    num_stages: int
    registers: int
    stack_bytes: int
    local_loads: int
    local_stores: int
    global_loads: int  # LDG instructions in the binary (static: a loop's body counts once)
    global_stores: int
    shared_bytes: int
    instructions: int
    occupancy: float | None
    compile_s: float
    sass_sha1: str  # of the SASS instructions: equal digests, the same machine code (a refactoring's check)


def _specialised(launch: Launch, config) -> tuple[dict, dict, dict, dict]:
    """(signature, constexprs, attrs, options) as Triton's launcher would
    derive them from these arguments on a GPU (Triton's own specialisation
    rules: pointers aligned to 16 bytes, integers equal to 1 or divisible by
    16, except the `do_not_specialize` ones)."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl

    from layers.aggregation.triton_kernels import FP_FUSION

    arguments = dict(launch.arguments)
    options = {"enable_fp_fusion": FP_FUSION}  # as the launchers pass it
    if config is not None:
        arguments.update(config.kwargs)
        options |= {"num_warps": config.num_warps, "num_stages": config.num_stages}
    signature, constexprs, attrs = {}, {}, {}
    for index, param in enumerate(launch.jit.params):
        value = arguments[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(index,)] = value
            continue
        specialise = param.name not in launch.jit.do_not_specialize and index not in launch.jit.do_not_specialize
        kind, spec = native_specialize_impl(BaseBackend, value, False, specialise, True)
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[(index,)] = spec
        elif spec:
            attrs[(index,)] = BaseBackend.parse_attr(spec)
    return signature, constexprs, attrs, options


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    import triton.knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        return subprocess.run([triton.knobs.nvidia.cuobjdump.path, *flags, file.name], capture_output=True,
                              text=True, check=True).stdout


def compile_launch(launch: Launch, config, arch: int = DEFAULT_ARCH) -> Build:
    """Compile one launch for sm_<arch> in one configuration (None: the
    launch's own tile and Triton's default warps and stages)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs, options = _specialised(launch, config)
    start = time.perf_counter()
    compiled = triton.compile(ASTSource(fn=launch.jit, signature=signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32), options=options)
    seconds = time.perf_counter() - start
    cubin = compiled.asm["cubin"]
    usage = re.search(r"REG:(\d+) STACK:(\d+)", _cuobjdump(cubin, "-res-usage"))
    if usage is None:
        raise RuntimeError(f"cuobjdump reported no resource usage for {launch.kernel}")
    sass = _cuobjdump(cubin, "-sass")
    instructions = re.findall(r"^.*/\*[0-9a-f]{4,}\*/ .*$", sass, flags=re.M)
    registers, stack = int(usage.group(1)), int(usage.group(2))
    warps, shared = compiled.metadata.num_warps, compiled.metadata.shared
    arguments = {**launch.arguments, **(config.kwargs if config is not None else {})}
    return Build(
        kernel=launch.kernel, block_p=arguments["BLOCK_P"], block_c=arguments["BLOCK_C"], num_warps=warps,
        num_stages=compiled.metadata.num_stages, registers=registers, stack_bytes=stack,
        local_loads=len(re.findall(r"\bLDL\b", sass)), local_stores=len(re.findall(r"\bSTL\b", sass)),
        global_loads=len(re.findall(r"\bLDG\b", sass)), global_stores=len(re.findall(r"\bSTG\b", sass)),
        shared_bytes=shared, instructions=len(instructions), occupancy=occupancy(registers, warps, shared, arch),
        compile_s=seconds, sass_sha1=hashlib.sha1("\n".join(instructions).encode()).hexdigest()[:16])


def _key(launch: Launch, config) -> tuple:
    """What makes a distinct binary: the kernel, its specialisation, options."""
    signature, constexprs, attrs, options = _specialised(launch, config)
    return (launch.jit.fn.__module__, launch.kernel, tuple(signature.items()), tuple(sorted(constexprs.items())),
            tuple(sorted((k, str(v)) for k, v in attrs.items())), tuple(sorted(options.items())))


@functools.cache
def versions() -> dict[str, str]:
    """The packages' versions (`bench.provenance`), read once. Each row names
    its compilers: Triton's figures differ between versions (docs/PERF.md,
    section 18), and JAX 0.11 lowers Pallas through an abstract GPU where
    0.10 does it by itself (`_abstract_gpu`)."""
    from bench import provenance

    return provenance.versions()


def triton_rows(cases: list[KernelCase], arch: int = DEFAULT_ARCH, tf32: bool = False,
                all_configs: bool = True, kernels: set[str] | None = None) -> Iterator[dict]:
    """One row per distinct binary: every launch of every case (of the
    `kernels` named, if given), in every
    configuration its autotuner tries (`all_configs`) or its first. Launches
    that Triton compiles to the same binary (the RedNet stages differ only in
    sizes that are not specialised; `auto` runs `triton`'s kernels) share a
    row, counted in `cases` (complete once the generator is exhausted: rows
    are yielded as they compile)."""
    seen: dict[tuple, dict] = {}
    for case in cases:
        for launch in triton_launches(case):
            if kernels is not None and launch.kernel not in kernels:
                continue
            if tf32 and "DOT_PRECISION" in launch.arguments:
                arguments = {**launch.arguments, "DOT_PRECISION": "tf32"}
                launch = Launch(launch.kernel, launch.jit, launch.configs, arguments)
            for config in (launch.configs if all_configs else launch.configs[:1]) or (None,):
                key = _key(launch, config)
                if key in seen:
                    seen[key]["cases"] += 1
                    continue
                build = compile_launch(launch, config, arch)
                seen[key] = row = {**case._asdict(), "cases": 1, "rows_per_step": launch.arguments.get("ROWS"),
                                   "tile_width": launch.arguments.get("TILE_W"),
                                   "dot_precision": launch.arguments.get("DOT_PRECISION"),
                                   "autotuned": bool(launch.configs), "arch": f"sm_{arch}",
                                   "triton_version": versions()["triton"], **vars(build)}
                yield row


class TritonCall(NamedTuple):
    """One kernel call that jax-triton handed XLA while lowering."""

    kernel: str  # the compiled kernel's name
    grid: tuple[int, int, int]
    scalars: tuple  # the integer arguments, in signature order (those equal to 1 are compiled in)
    arrays: int  # pointer arguments, outputs included
    ptx_bytes: int
    vector_loads: int  # 128-bit global loads in the PTX (first configuration)
    configs: int  # tile configurations XLA chooses from at the first run (1: not autotuned)


class _StandIn:
    """jaxlib's CUDA Triton bindings (`jax._src.lib.gpu_triton`), which a
    JAX without GPU support lacks and jax-triton needs: the same calls,
    recording what they receive instead of building XLA's protobuf."""

    def __init__(self, arch: int):
        self.arch, self.calls = arch, []

    def get_compute_capability(self, device):
        return self.arch

    def get_serialized_metadata(self, *args):
        return b""

    def TritonKernel(self, name, num_warps, num_ctas, shared_bytes, binary, ttir, compute_capability):
        return {"name": name, "ptx_bytes": len(binary),
                "vector_loads": len(re.findall(r"\bld\.global(?:\.\w+)*\.v4\b", binary))}

    def create_array_parameter(self, zeroed_bytes, divisibility):
        return ("array", divisibility)

    def create_scalar_parameter(self, value, dtype):
        return ("scalar", value)

    def TritonKernelCall(self, kernel, grid_x, grid_y, grid_z, parameters):
        stand_in = self

        class Call:
            def to_proto(self, name, metadata):
                stand_in.calls.append(self.record(1))
                return b""

            @staticmethod
            def record(configs):
                return TritonCall(kernel["name"], (grid_x, grid_y, grid_z),
                                  tuple(p[1] for p in parameters if p[0] == "scalar"),
                                  sum(p[0] == "array" for p in parameters), kernel["ptx_bytes"],
                                  kernel["vector_loads"], configs)

        return Call()

    def TritonAutotunedKernelCall(self, name, calls, aliases):
        stand_in = self

        class Autotuned:
            def to_proto(self, name, metadata):
                stand_in.calls.append(calls[0][0].record(len(calls)))
                return b""

        return Autotuned()


@contextmanager
def jax_triton_without_gpu(arch: int = DEFAULT_ARCH) -> Iterator[list[TritonCall]]:
    """Let jax-triton lower for CUDA on a JAX without GPU support: the
    stand-in bindings above, and `triton_jax` told it is not on a CPU. Yields
    the list that the lowered calls are appended to."""
    from jax._src.lib import gpu_triton

    from layers.aggregation import triton_jax

    stand_in = _StandIn(arch)
    names = [n for n in vars(_StandIn) if not n.startswith("_")]
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(gpu_triton, name, getattr(stand_in, name), create=True))
        stack.enter_context(mock.patch.object(triton_jax, "_interpret", lambda: False))
        yield stand_in.calls


def _lowered(case: KernelCase) -> tuple[str, float]:
    """Lower one Involution layer call (JAX) for CUDA: (StableHLO text, seconds)."""
    import jax
    import jax.numpy as jnp
    import keras

    layer = _layer(case)
    shape = (1, case.resolution, case.resolution, case.channels)
    layer.build(shape)
    trainable = [v.value for v in layer.trainable_variables]
    fixed = [(v, v.value) for v in layer.non_trainable_variables]
    training = case.mode == "training"

    def forward(trainable, x):
        # Through __call__ with the input in the compute dtype, as the sweep's
        # runner calls it (bench/backends/jax.py): stateless_call would skip
        # the mixed-precision casts and give the kernels float32 inputs.
        mapping = [*zip(layer.trainable_variables, trainable, strict=True), *fixed]
        with keras.StatelessScope(state_mapping=mapping):
            return layer(x, training=training)

    if training:
        # value_and_grad: with the loss unused, XLA would drop the forward kernel
        fn = jax.value_and_grad(lambda t, x: jnp.sum(forward(t, x).astype(jnp.float32)), argnums=(0, 1))
    else:
        fn = forward
    start = time.perf_counter()
    x = jnp.zeros(shape, keras.DTypePolicy(case.dtype).compute_dtype)
    text = jax.jit(fn).trace(trainable, x).lower(lowering_platforms=("cuda",)).as_text()
    return text, time.perf_counter() - start


@contextmanager
def _abstract_gpu(arch: int) -> Iterator[None]:
    """Pallas' Triton lowering for a GPU of compute capability `arch`, on any
    machine. JAX 0.11 asks the mesh's device for the capability and, with no
    GPU, refuses unless an abstract GPU stands in; JAX 0.10 takes 9.0 itself."""
    try:
        from jax._src.pallas.triton import gpu_info
    except ImportError:  # JAX 0.10: no device needed, and 9.0 whatever the row would say
        if arch != DEFAULT_ARCH:
            raise ValueError(f"--arch: without a GPU, JAX 0.10 lowers Pallas for compute capability 90 only; "
                             f"JAX 0.11 and later lower for others. Received: --arch={arch}") from None
        yield
        return
    import jax

    # JAX's own table of GPUs and their capabilities (jax/_src/pallas/triton/gpu_info.py)
    kinds = [str(v) for v in gpu_info.GpuVersion if gpu_info.get_gpu_info_from_version(v).compute_capability == arch]
    if not kinds:
        known = sorted({gpu_info.get_gpu_info_from_version(v).compute_capability for v in gpu_info.GpuVersion})
        raise ValueError(f"--arch: JAX {jax.__version__} lowers Pallas for the compute capabilities of the GPUs it "
                         f"knows ({', '.join(map(str, known))}). Received: --arch={arch}")
    device = jax.sharding.AbstractDevice(device_kind=kinds[0], num_cores=None, platform="gpu")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), (), abstract_device=device)):
        yield


def pallas_lowering(case: KernelCase, arch: int = DEFAULT_ARCH) -> dict:
    """Lower one Involution layer call (JAX) for CUDA with its Pallas kernels
    compiled, not interpreted: Pallas' Triton lowering runs here, on any
    machine. Returns the row: how many Triton kernels the program calls."""
    from layers.aggregation import pallas_kernels
    from layers.aggregation._common import rows_per_step

    # every Pallas call goes through _interpret
    with mock.patch.object(pallas_kernels, "_interpret", lambda: False), _abstract_gpu(arch):
        text, seconds = _lowered(case)
    names = re.findall(r'name = \\?"(\w+)', text)  # the Pallas kernels' names in the calls' configs
    return {**case._asdict(), "rows_per_step": rows_per_step(case.kernel_size), "platform": "cuda",
            "triton_calls": text.count("__gpu$xla.gpu.triton"),
            "kernel_names": ",".join(sorted(set(names))), "lower_s": seconds, "jax_version": versions()["jax"]}


def jax_triton_lowering(case: KernelCase, arch: int = DEFAULT_ARCH) -> dict:
    """Lower one Involution layer call (JAX) running the Triton kernels for
    CUDA through jax-triton, which compiles each kernel with Triton (to PTX,
    every autotuner tile) as it lowers: on any machine (see
    `jax_triton_without_gpu`). Returns the row, with the calls' kernels."""
    from layers.aggregation._common import rows_per_step

    with jax_triton_without_gpu(arch) as calls:
        text, seconds = _lowered(case)
    return {**case._asdict(), "rows_per_step": rows_per_step(case.kernel_size), "platform": "cuda",
            "triton_calls": text.count("triton_kernel_call"),
            "kernel_names": ",".join(sorted({call.kernel for call in calls})), "lower_s": seconds,
            "triton_version": versions()["triton"], "jax_version": versions()["jax"], "calls": calls}


def jax_lowering(case: KernelCase, arch: int = DEFAULT_ARCH) -> dict:
    """The row of one JAX case: Pallas' lowering, or jax-triton's (the
    kernels it called, in a count, for the CSV)."""
    if case.implementation.startswith("pallas"):
        return pallas_lowering(case, arch)
    row = jax_triton_lowering(case, arch)
    calls = row.pop("calls")
    return {**row, "autotuned_configs": sum(call.configs for call in calls),
            "ptx_bytes": sum(call.ptx_bytes for call in calls),
            "vector_loads": sum(call.vector_loads for call in calls)}


def summary(rows: list[dict], backend: str) -> str:
    """The rows as a Markdown table, with the totals under it."""
    if backend == "jax":
        lines = ["| implementation | px | C | G | K | s | dtype | mode | Triton kernels | lowering s |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['implementation']} | {r['resolution']} | {r['channels']} | {r['groups']} | "
                  f"{r['kernel_size']} | {r['stride']} | {r['dtype']} | {r['mode']} | {r['triton_calls']} | "
                  f"{r['lower_s']:.1f} |" for r in rows]
        total = sum(r["lower_s"] for r in rows)
        return "\n".join(lines + ["", f"{len(rows)} layer calls lowered for CUDA in {total:.1f} s"])
    lines = ["| kernel | K | s | C/G | dtype | BLOCK_P × warps | registers | stack B | LDL/STL | occupancy | "
             "compile s | cases |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        occ = "—" if r["occupancy"] is None else f"{r['occupancy']:.0%}"
        lines.append(
            f"| {r['kernel']} | {r['kernel_size']} | {r['stride']} | {r['channels'] // r['groups']} | {r['dtype']} | "
            f"{r['block_p']} × {r['num_warps']} | {r['registers']} | {r['stack_bytes']} | "
            f"{r['local_loads']}/{r['local_stores']} | {occ} | {r['compile_s']:.1f} | {r['cases']} |")
    spilling = sum(r["stack_bytes"] > 0 for r in rows)
    total = sum(r["compile_s"] for r in rows)
    return "\n".join(lines + ["", f"{len(rows)} distinct binaries, {spilling} with a stack frame (spills), "
                                  f"compiled in {total:.1f} s on this machine"])


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from bench import keras_backend, sweeps

    parser = command_line.Parser(prog="python -m bench.kernel_resources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", help="build the kernels of this sweep's involution layer cases (a built-in "
                        "name or a TOML file) instead of the RedNet stages")
    parser.add_argument("--stride", type=int, default=1,
                        help="the RedNet stages at this stride (default 1; not with --sweep)")
    parser.add_argument("--arch", type=int, default=DEFAULT_ARCH,
                        help="CUDA compute capability as major*10+minor (default 90: H100, H200)")
    parser.add_argument("--tf32", action="store_true", help="compile tl.dot with TF32 (the paper sweep's --tf32)")
    parser.add_argument("--first-config", action="store_true",
                        help="only the autotuner's first tile configuration of each kernel")
    parser.add_argument("--kernels", help="PyTorch: only these Triton kernels, by name, comma-separated (e.g. "
                        "_dx_kernel,_dx_gen_kernel; to compare a change's binaries by their sass_sha1)")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the CSV (default: .)")
    args = parser.parse_args(argv)
    if args.arch < 70:
        print(f"error: --arch must be a CUDA compute capability of at least 70. Received: --arch={args.arch}",
              file=sys.stderr)
        return 2
    if args.stride < 1 or (args.sweep and args.stride != 1):
        print("error: --stride must be at least 1, and the RedNet stages' (a sweep sets its own strides). "
              f"Received: --stride={args.stride}" + (f" with --sweep={args.sweep}" if args.sweep else ""),
              file=sys.stderr)
        return 2
    if message := keras_backend.problem():
        print(f"error: {message}", file=sys.stderr)
        return 2
    from bench.rundir import RunDirError, writable_folder

    try:  # before the first kernel is built
        writable_folder(args.out, "--out")
    except RunDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from keras import backend

    name = backend.backend()
    if name not in ("torch", "jax"):
        print(f"error: KERAS_BACKEND={name} has no Triton or Pallas kernel; set KERAS_BACKEND=torch or jax",
              file=sys.stderr)
        return 2
    if name == "jax":
        try:
            with _abstract_gpu(args.arch):  # a capability JAX's table lacks: one line now, not at the first case
                pass
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    kernels = set(args.kernels.split(",")) if args.kernels else None
    if kernels is not None:
        from layers.aggregation.triton_kernels import SOURCES

        known = [kernel.__name__ for kernel in SOURCES]
        if name != "torch" or not kernels <= set(known):
            print(f"error: --kernels takes some of {','.join(known)}, on KERAS_BACKEND=torch. "
                  f"Received: --kernels={args.kernels} on {name}", file=sys.stderr)
            return 2
    try:
        cases = sweep_cases(args.sweep, name) if args.sweep else rednet_cases(name, args.stride)
    except sweeps.SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = args.out / f"kernel-resources-{name}.csv"
    rows: list[dict] = []
    produced = (triton_rows(cases, arch=args.arch, tf32=args.tf32, all_configs=not args.first_config, kernels=kernels)
                if name == "torch" else map(functools.partial(jax_lowering, arch=args.arch), cases))
    for row in produced:
        rows.append(row)
        pd.DataFrame(rows).to_csv(path, index=False)  # after each row: an interrupted run keeps its rows
        print(f"  {row['implementation']} {row.get('kernel', row.get('kernel_names'))} K{row['kernel_size']} "
              f"s{row['stride']} C{row['channels']} G{row['groups']} {row['dtype']} {row['mode']}: "
              + (f"BLOCK_P={row['block_p']} warps={row['num_warps']}, {row['registers']} registers, "
                 f"{row['stack_bytes']} B stack, {row['compile_s']:.1f} s" if name == "torch"
                 else f"{row['triton_calls']} Triton kernels, {row['lower_s']:.1f} s"), flush=True)
    pd.DataFrame(rows).to_csv(path, index=False)  # the final `cases` counts
    print(summary(rows, name))
    print(f"  rows: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
