"""The C allocator a sweep's processes start with (`--c-allocator`).

On a CPU the allocator moved involution's times by up to 4.5x and Conv2D's
hardly at all (docs/PERF.md, sections 33 and 34): a step whose temporaries
exceed glibc's mmap threshold maps them afresh and faults their pages in at
every step. An allocator is chosen before a process starts (`LD_PRELOAD`, the
`MALLOC_*` variables), so the supervisor (`bench.supervisor`) starts the
sweep's process with the choice's variables, and that process checks, before
any framework loads, that it got it (`problem`: the library of the `malloc` it
calls, `bench.provenance.malloc_library`, and its environment):

- `system`: the process's own, as the caller's environment sets it (default);
- `keep`: glibc keeping large blocks for reuse (its mmap and trim thresholds
  raised above any step's temporaries);
- `tcmalloc`: gperftools' tcmalloc loaded first (Debian: libtcmalloc-minimal4);
- `jemalloc`: jemalloc loaded first (Debian: libjemalloc2), its defaults.

Nothing here imports a framework.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from functools import cache
from pathlib import Path

from bench import provenance

SYSTEM = "system"
# glibc's thresholds for "keep", in bytes: above any step's temporaries in the sweeps.
KEEP_BYTES = "4000000000"
KEEP = {"MALLOC_MMAP_THRESHOLD_": KEEP_BYTES, "MALLOC_TRIM_THRESHOLD_": KEEP_BYTES}
# A preloaded allocator: the library's name for ctypes.util.find_library, and the package that has it.
LIBRARIES = {"tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4"), "jemalloc": ("jemalloc", "libjemalloc2")}
CHOICES = (SYSTEM, "keep", *LIBRARIES)


@cache
def library_file(choice: str) -> str | None:
    """The file name the dynamic linker finds for a preloaded choice
    (e.g. "libtcmalloc_minimal.so.4"), None where it is not installed."""
    return ctypes.util.find_library(LIBRARIES[choice][0])


def missing(choice: str, platform: str = sys.platform, glibc: str | None = None) -> str | None:
    """Why `choice` cannot be had on this machine (one line), or None.
    `platform` and `glibc` (`provenance.glibc_version()`) default to this
    machine's ("" for a C library that is not glibc)."""
    glibc = provenance.glibc_version() if glibc is None else glibc
    if choice == "keep" and not glibc:
        return ("--c-allocator=keep sets glibc's malloc thresholds, and this machine's C library is not glibc; "
                f"choose system. Received: --c-allocator={choice}")
    if choice in LIBRARIES and not platform.startswith("linux"):
        return (f"--c-allocator={choice} loads the library through LD_PRELOAD, which only Linux's dynamic linker "
                f"reads (this is {platform}); choose system. Received: --c-allocator={choice}")
    if choice in LIBRARIES and not library_file(choice):
        name, package = LIBRARIES[choice]
        return (f"--c-allocator={choice}: lib{name} is not installed here; install it (Debian: apt-get install "
                f"{package}) or choose another of {', '.join(CHOICES)}. Received: --c-allocator={choice}")
    return None


def unusable(choice: str) -> str | None:
    """Why `choice` is not a choice, or cannot be had here (one line), or None."""
    if choice not in CHOICES:
        return f"--c-allocator takes {' or '.join(CHOICES)}. Received: --c-allocator={choice}"
    return missing(choice)


def variables(choice: str, environ: dict[str, str]) -> dict[str, str]:
    """The variables to start a process with for `choice`, given the caller's
    `environ`: a preloaded allocator goes first in LD_PRELOAD (the dynamic
    linker's first `malloc` wins); `system` changes nothing."""
    if choice == "keep":
        return dict(KEEP)
    if choice in LIBRARIES:
        preload = environ.get("LD_PRELOAD", "")
        return {"LD_PRELOAD": f"{library_file(choice)} {preload}".strip()}
    return {}


def problem(choice: str | None, library: str | None = None, environ: dict[str, str] | None = None) -> str | None:
    """Why the allocator serving this process is not `choice` (one line), or
    None when it is (or nothing was chosen). `library` is the file of the
    `malloc` the process calls and `environ` its environment (default: this
    process's, `provenance.malloc_library()` and os.environ)."""
    if choice in (None, SYSTEM):
        return None
    environ = os.environ if environ is None else environ
    try:
        library = library or provenance.malloc_library()
    except (OSError, AttributeError):  # the platform's linker cannot say: c_allocator's line says why
        library = ""
    family = provenance.allocator_family(Path(library).name)
    if choice in LIBRARIES:
        if family == choice:
            return None
        how = f"LD_PRELOAD={library_file(choice)}"
    else:
        if family == "libc" and all(environ.get(key) == value for key, value in KEEP.items()):
            return None
        how = " ".join(f"{key}={value}" for key, value in KEEP.items()) + " and no allocator in LD_PRELOAD"
    served = provenance.c_allocator(library or None, environ)
    return (f"--c-allocator={choice}: this process's malloc is {served}. The supervisor starts the sweep's "
            f"process with {how}; with --no-supervise, start pytest so yourself. Received: --c-allocator={choice}")


if __name__ == "__main__":  # python -m bench.allocators CHOICE...: one line and exit 2 where one is unusable
    for given in sys.argv[1:]:
        reason = unusable(given)
        if reason:
            print(reason, file=sys.stderr)
            sys.exit(2)
