"""Which code, packages, settings and processor produced a run.

Recorded in run.json and, in short, in every row: two runs can only be
compared when these say what differs between them. Nothing here imports a
framework (the supervisor checks `--resume` against the commit).

- the git commit of the checkout and whether its tracked files were modified;
- the versions of the packages whose code runs or measures;
- the environment variables that change results (thread counts, XLA and
  TensorFlow flags, TF32 overrides, visible GPUs, the C allocator's settings, ...);
- the C allocator that serves the process's `malloc` (glibc's, or tcmalloc or
  jemalloc loaded first): on a CPU it moved involution's times by up to 4.5x and
  Conv2D's hardly at all (docs/PERF.md, sections 33 and 34);
- the CPU: model, microarchitecture (`archspec`, Spack's detector) and the
  instruction-set extensions oneDNN and XLA dispatch on (from the kernel's
  flags): two machines that both call themselves "AMD EPYC" ran TensorFlow's
  Conv2D 3x apart.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import subprocess
from pathlib import Path

PACKAGES = (
    "involution-bench", "keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "jax-cuda13-plugin",
    "jax-cuda12-plugin", "jax-triton", "torch", "triton", "numpy", "scipy", "pandas", "pytest", "pytest-benchmark",
    "memray", "nvidia-ml-py", "tensorboard", "tensorboard-plugin-profile", "xprof", "archspec",
)
ENV_NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
             "NVIDIA_TF32_OVERRIDE", "XLA_FLAGS", "LIBTPU_INIT_ARGS", "KMP_AFFINITY", "KMP_BLOCKTIME",
             "CUBLAS_WORKSPACE_CONFIG", "CUDA_LAUNCH_BLOCKING", "LD_PRELOAD")
# The C allocators' settings: MALLOC_* and GLIBC_TUNABLES (glibc), MALLOC_CONF
# (jemalloc), TCMALLOC_*: whether a step's large temporaries go back to the
# system after each step and fault in again at the next (3x a JAX step's time on
# a CPU: docs/PERF.md, section 33).
ALLOCATOR_PREFIXES = ("MALLOC_", "TCMALLOC_", "GLIBC_TUNABLES")
ENV_PREFIXES = ("TF_", "XLA_", "JAX_", "KERAS_", "TORCH_", "PYTORCH_", "TRITON_", "INVOLUTION_", "ONEDNN_", "DNNL_",
                *ALLOCATOR_PREFIXES)
# Terraform's variables, which share TensorFlow's prefix (HashiCorp's Terraform CLI
# environment variables reference): not settings of anything a run measures.
TERRAFORM_PREFIXES = ("TF_CLI_", "TF_VAR_", "TF_TOKEN_", "TF_REGISTRY_", "TF_LOG", "TF_INPUT", "TF_DATA_DIR",
                      "TF_WORKSPACE", "TF_IN_AUTOMATION", "TF_PLUGIN_CACHE_DIR", "TF_IGNORE",
                      "TF_STATE_PERSIST_INTERVAL")
# Instruction-set extensions the frameworks' CPU kernels dispatch on.
ISA = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
       "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def git(root: Path) -> dict:
    """{"git_commit": sha or None, "git_dirty": bool or None, "git_source": how}."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=20,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return {"git_commit": None, "git_dirty": None,
                "git_source": f"not a git checkout, or no git ({type(error).__name__})"}
    return {"git_commit": commit, "git_dirty": bool(status.strip()), "git_source": f"git in {root}"}


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def environment() -> dict[str, str]:
    return {key: value for key, value in sorted(os.environ.items())
            if (key in ENV_NAMES or key.startswith(ENV_PREFIXES)) and not key.startswith(TERRAFORM_PREFIXES)
            and key != "INVOLUTION_BENCH_HANDOFF"}


# Recorded variables that name a place, not a setting (TRITON_CACHE_DIR differs
# between two clones' tox environments, the usual A/B): not a change to warn of.
LOCATION_SUFFIXES = ("_DIR", "_FILE", "_HOME", "_PATH")


# The run.json groups of names whose values set a run's times, and what a run
# that recorded the group but not a name in it had instead.
SETTING_GROUPS = {"packages": "not installed", "environment": "unset"}


def settings(meta: dict) -> dict[str, str]:
    """What a run.json says, besides the cases and the machine, set the run's
    times, as {name: value}: "commit" (short, "(modified)" where the checkout
    was), "C allocator" (the library's name and its settings, without its
    path), each package's version and each recorded variable (`environment()`;
    places, `LOCATION_SUFFIXES`, left out). What a run did not record is absent."""
    facts = {}
    if meta.get("git_commit"):
        facts["commit"] = short(meta["git_commit"]) + (" (modified)" if meta.get("git_dirty") else "")
    if meta.get("c_allocator"):
        facts["C allocator"] = re.sub(r" \([^)]*\)", "", meta["c_allocator"], count=1)
    for group in SETTING_GROUPS:
        facts.update({name: str(value) for name, value in sorted((meta.get(group) or {}).items())
                      if not name.endswith(LOCATION_SUFFIXES)})
    return facts


def differences(metas: list[dict]) -> list[dict[str, str]]:
    """Per run, the `settings` whose values differ between the runs (two
    commits, two C allocators, a variable set in one), in `settings`' order. A
    name some run did not record at all (a run.json from before the field) is
    left out; a package or variable missing from a group a run did record
    counts as "not installed" or "unset". Where the C allocator differs,
    LD_PRELOAD (what loaded it) is left out."""
    facts = [settings(meta) for meta in metas]
    order = ["commit", "C allocator"]
    for group, absent in SETTING_GROUPS.items():
        names = sorted({name for fact, meta in zip(facts, metas, strict=True) for name in (meta.get(group) or {})
                        if name in fact})
        order += names
        for fact, meta in zip(facts, metas, strict=True):
            if isinstance(meta.get(group), dict):
                fact.update({name: absent for name in names if name not in fact})
    differing = [name for name in order
                 if all(name in fact for fact in facts) and len({fact[name] for fact in facts}) > 1]
    if "C allocator" in differing and "LD_PRELOAD" in differing:
        differing.remove("LD_PRELOAD")  # how the allocator was loaded: its own line says what it did
    return [{name: fact[name] for name in differing} for fact in facts]


# The C library's file names (libc.so.6; libc-2.xx.so on older systems).
C_LIBRARY_FILES = ("libc.so", "libc-")


class _SymbolInfo(ctypes.Structure):  # dladdr's Dl_info
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


def malloc_library() -> str:
    """The file of the library whose `malloc` this process calls: the first
    one the dynamic linker finds, so a tcmalloc or jemalloc in LD_PRELOAD (or
    linked into the program) wins over the C library's. Raises OSError where
    the platform's linker cannot say."""
    process = ctypes.CDLL(None)  # the global scope, searched as the linker does
    address = ctypes.cast(process.malloc, ctypes.c_void_p)
    info = _SymbolInfo()
    if not process.dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        raise OSError("dladdr found no library for malloc")
    return os.fsdecode(info.dli_fname)


def glibc_version() -> str | None:
    """"glibc 2.36" where the C library is glibc, else None."""
    return os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None


def allocator_family(library_name: str) -> str | None:
    """Which allocator a `malloc` library's file name is: "jemalloc",
    "tcmalloc", "libc" (the C library's) or None (one this does not know)."""
    for family in ("jemalloc", "tcmalloc"):
        if family in library_name:
            return family
    return "libc" if library_name.startswith(C_LIBRARY_FILES) else None


def _allocator_setting(library_name: str, key: str) -> bool:
    """Whether the variable `key` is a setting of the allocator in `library_name`."""
    family = allocator_family(library_name)
    if family == "jemalloc":
        return key == "MALLOC_CONF"
    if family == "tcmalloc":
        return key.startswith("TCMALLOC_")
    if family == "libc":
        return key == "GLIBC_TUNABLES" or (key.startswith("MALLOC_") and key != "MALLOC_CONF")
    return key.startswith(ALLOCATOR_PREFIXES)  # an allocator this does not know: every candidate


def c_allocator(library: str | None = None, environ: dict | None = None) -> str:
    """One line saying which C allocator serves this process and with which of
    its settings, e.g. "glibc 2.36 (libc.so.6), its defaults" or
    "libtcmalloc_minimal.so.4 (/usr/lib/...), its defaults". `library` and
    `environ` default to this process's (`malloc_library()`, os.environ)."""
    environ = os.environ if environ is None else environ
    try:
        library = library or malloc_library()
    except (OSError, AttributeError) as error:  # AttributeError: no dladdr or malloc symbol in the global scope
        return f"unknown ({type(error).__name__}: {error})"
    name = Path(library).name
    if allocator_family(name) == "libc":
        label = f"{glibc_version() or 'the C library'} ({name})"
    else:
        label = f"{name} ({library})"
    settings = [f"{key}={value}" for key, value in sorted(environ.items()) if _allocator_setting(name, key)]
    return f"{label}, " + (", ".join(settings) if settings else "its defaults")


def cpu() -> dict:
    flags: set[str] = set()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key == "model name" and not model:
                    model = value.strip()
    except OSError:
        pass
    try:
        import archspec.cpu

        host = archspec.cpu.host()
        micro, vendor = host.name, host.vendor
    except Exception as error:  # archspec missing or a processor it does not know
        micro, vendor = f"unknown ({type(error).__name__})", ""
    return {"cpu_model": model or os.uname().machine, "cpu_vendor": vendor, "cpu_microarchitecture": micro,
            "cpu_isa": ",".join(flag for flag in ISA if flag in flags)}


def collect(root: Path) -> dict:
    """Everything, for run.json."""
    return {**git(root), **cpu(), "c_allocator": c_allocator(), "packages": versions(),
            "environment": environment()}


def row_fields(provenance: dict) -> dict:
    """What every row carries of it (run.json has the rest)."""
    return {key: provenance.get(key) for key in ("git_commit", "git_dirty", "cpu_model", "cpu_microarchitecture",
                                                 "cpu_isa", "c_allocator")}


def machine_key(meta: dict) -> tuple:
    """What makes two runs' machines the same for comparing them."""
    machine = meta.get("machine") or {}
    return (meta.get("cpu_model") or machine.get("cpu"), meta.get("cpu_microarchitecture"), meta.get("cpu_isa"),
            machine.get("gpu_name"), meta.get("device_name"))


def short(commit: str | None) -> str:
    return commit[:10] if commit and re.fullmatch(r"[0-9a-f]{40}", commit) else str(commit)
