"""The sweep's command-line options, checked before any framework loads.

A mistyped option is one line naming it, the value received and what it
takes, and it costs no framework start-up: the supervisor checks the options
here before it starts the sweep's process (`bench/conftest.py`), and the
session uses the same functions. Nothing here imports Keras.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from bench import allocators, keras_backend, sweeps, timing
from bench.rundir import RunDir, RunDirError, writable_folder


class UsageError(ValueError):
    """Bad command-line input; the message names the option."""


# The options that take a number or one of a few words. pytest registers them as text (bench/conftest.py)
# and `typed` converts and bounds them: argparse's own conversion would answer a mistyped value with the
# whole usage text, where every other check here is one line.
SECONDS = ("--bench-time", "--case-timeout", "--precompile-time")  # each a positive number of seconds
COUNTS = {"--max-restarts": 0, "--threads": 1, "--passes": 1, "--precompile": 0}  # the least each takes
CHOICES = {"--l2": timing.L2_MODES, "--c-allocator": allocators.CHOICES}


def typed(config) -> None:
    """Convert the options of SECONDS, COUNTS and CHOICES in place and check
    their bounds (raises UsageError, quoting the value as given)."""
    for option in (*SECONDS, *COUNTS, *CHOICES):
        value = config.getoption(option)
        if value is None:  # not given, and no default
            continue
        if option in CHOICES:
            if value not in CHOICES[option]:
                raise UsageError(f"{option} takes {' or '.join(CHOICES[option])}. Received: {option}={value}")
            continue
        try:
            number = float(value) if option in SECONDS else int(value)
        except ValueError:
            number = None
        if option in SECONDS:
            if number is None or not math.isfinite(number) or number <= 0:
                raise UsageError(f"{option} takes a positive number of seconds. Received: {option}={value}")
        elif number is None or isinstance(value, float) or number < COUNTS[option]:
            raise UsageError(f"{option} takes a whole number of {COUNTS[option]} or more. "
                             f"Received: {option}={value}")
        setattr(config.option, option.lstrip("-").replace("-", "_"), number)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not int(match[2]) or int(match[1]) >= int(match[2]):
        raise UsageError(
            "--shard takes I/N with 0 <= I < N (the I-th of N slices, counted from 0 like a "
            f"Kubernetes completion index or a Slurm array task id). Received: --shard={text}"
        )
    return int(match[1]), int(match[2])


def pattern(option: str, text: str | None) -> re.Pattern | None:
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as error:
        raise UsageError(f"{option} takes a regular expression ({error}). Received: {option}={text}") from None


def resumable(path: str) -> dict:
    """The run.json of a run directory given to --resume."""
    meta = RunDir(path).read_meta()
    if not meta:
        raise UsageError(f"--resume: {path} has no run.json; is it a run directory? Received: --resume={path}")
    return meta


def same_backend(meta: dict, backend: str | None) -> None:
    """A run is resumed with the backend it started with (KERAS_BACKEND is fixed per process)."""
    if backend and meta.get("backend") and meta["backend"] != backend:
        raise UsageError(f"--resume: the run used KERAS_BACKEND={meta['backend']}, this process {backend}; "
                         f"set KERAS_BACKEND={meta['backend']}")


def same_commit(meta: dict, commit: str | None, path: str) -> None:
    """A run is resumed with the code it started with: one run, one version."""
    started = meta.get("git_commit")
    if started and commit and started != commit:
        raise UsageError(f"--resume: {path} was started at commit {started[:10]}, this checkout is at {commit[:10]}; "
                         "resuming would mix two versions' results in one run: check out the run's commit, start "
                         f"a new run, or pass --allow-other-commit. Received: --resume={path}")


def switch_settings(switches: dict) -> str:
    """The kernel switches of run.json as the environment settings that make them."""
    return " ".join(f"{variable}={value}" for variable, value in switches.items()) or "no switches (no fused kernels)"


def same_kernels(meta: dict, switches: dict, path: str) -> None:
    """A run is resumed with the fused kernels it started with
    (`layers.aggregation.kernel_switches`, recorded in run.json)."""
    started = meta.get("kernel_switches")
    if started and started != switches:
        raise UsageError(f"--resume: {path} was started with {switch_settings(started)}, this process has "
                         f"{switch_settings(switches)}; resuming would mix two builds of the kernels in one run: set "
                         f"{switch_settings(started)}, or start a new run. Received: --resume={path}")


def same_allocator(meta: dict, allocator: str, path: str) -> None:
    """A run is resumed with the C allocator it started with
    (`provenance.c_allocator`, recorded in run.json)."""
    started = meta.get("c_allocator")
    if started and started != allocator:
        raise UsageError(f"--resume: {path} was started with the C allocator {started}, this process has "
                         f"{allocator}; resuming would mix two allocators' times in one run: start it as the run "
                         "was started (--c-allocator, LD_PRELOAD, MALLOC_*), or start a new run. "
                         f"Received: --resume={path}")


def _distributed(get) -> str:
    """The pytest-xdist options that would spread the sweep over workers, as
    the user gave them ("" if none, or without xdist). xdist itself turns -n 0
    into no distribution, and -n or --dist (-d) into distribution; this check
    may run before xdist has done so."""
    workers = get("numprocesses", None)
    if workers is not None:
        return f"-n {workers}" if workers != 0 else ""
    if get("distload", False):
        return "-d"
    dist = get("dist", "no")
    return f"--dist {dist}" if dist != "no" else ""


def check(config) -> None:
    """Everything about the options that needs no framework (raises UsageError)."""
    message = keras_backend.problem()  # a backend Keras cannot load fails deep inside `import keras`
    if message:
        raise UsageError(message)
    typed(config)
    get = config.getoption
    missing = allocators.missing(get("--c-allocator") or allocators.SYSTEM)
    if missing:
        raise UsageError(missing)
    parse_shard(get("--shard"))
    distributed = _distributed(get)
    if distributed:
        raise UsageError("pytest-xdist runs cases side by side in workers, each timed while the others share its "
                         "cores and device (and pytest-benchmark turns itself off under xdist): the sweep times "
                         "one case at a time. Leave out -n and --dist (or pass -n 0); --shard=I/N splits a sweep "
                         f"between machines. Received: {distributed}")
    for option in ("--profile", "--bench-inject-failure", "--bench-inject-crash", "--bench-inject-hang"):
        value = get(option)
        if value != "*":
            pattern(option, value)
    try:
        if get("--sweep"):
            sweeps.locate(get("--sweep"))
    except sweeps.SweepError as error:
        raise UsageError(str(error)) from None
    if get("--resume"):
        # Keras reads KERAS_BACKEND when it is set (else ~/.keras/keras.json, checked by the session).
        meta = resumable(get("--resume"))
        same_backend(meta, os.environ.get("KERAS_BACKEND"))
        if not get("--allow-other-commit"):
            from bench import provenance

            same_commit(meta, provenance.git(config.rootpath).get("git_commit"), get("--resume"))
        path = Path(get("--resume"))
    elif get("--run-dir"):
        try:
            path = writable_folder(get("--run-dir"), "--run-dir")
        except RunDirError as error:
            raise UsageError(str(error)) from None
    else:
        return
    try:
        RunDir(path).check_free()
    except OSError as error:
        raise UsageError(str(error)) from None
