"""One runner per Keras backend, behind one interface.

`KERAS_BACKEND` is fixed when Keras is imported, so a process runs one
backend; `current()` returns its runner. A runner turns a built layer or
model and a case into a `Step`: a function doing one forward (inference) or
forward + backward (training) step on inputs already on the device, the
function that waits for the device, and what the counters need.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from bench import keras_backend, machine
from bench.cases import Case
from bench.timing import DeviceTiming, Flush

NO_DEVICE_CLOCK = "none: a CPU run (no device clock: the latency rounds time the step)"


@dataclass
class Step:
    """One prepared step of a case.

    Attributes:
        run: runs one step and returns its outputs (possibly still computing
            on an asynchronous device).
        sync: blocks until `run`'s outputs exist on the device.
        eager: the same step uncompiled, for counters that trace it.
        info: backend objects the counters and the profiler need.
    """

    run: Callable[[], Any]
    sync: Callable[[Any], None]
    eager: Callable[[], Any]
    info: dict = field(default_factory=dict)

    def round(self) -> None:
        self.sync(self.run())


class Runner:
    """What every backend provides. Subclasses live in this package."""

    name = "base"

    def device_kind(self) -> str:
        """'gpu' or 'cpu'."""
        raise NotImplementedError

    def device_name(self) -> str:
        raise NotImplementedError

    def configure(self, tf32: bool) -> str:
        """Pin the float32 matmul/convolution precision; returns its description."""
        raise NotImplementedError

    def configure_threads(self, threads: int) -> str:
        """Set the framework's intra-op threads (`bench.threads`); returns what was set."""
        return "no intra-op setting: bounded by the process's CPU affinity"

    def versions(self) -> dict[str, str]:
        return {"keras": keras.__version__}

    def sync_function(self) -> Callable[[Any], None]:
        """What ends every timed round: blocks until a step's outputs exist."""
        raise NotImplementedError

    def device_timing(self) -> tuple[DeviceTiming | None, str]:
        """The device clock of this backend (`bench.timing`), or None and why."""
        return None, NO_DEVICE_CLOCK

    def l2_bytes(self) -> int | None:
        """The GPU's L2 cache size, when known."""
        return machine.l2_bytes(self.device_name()) if self.device_kind() == "gpu" else None

    def l2_flush(self) -> Flush | None:
        """A `Flush` writing at least twice the L2 (GPUs only)."""
        return None

    def autotuner_choices(self) -> tuple[dict | None, str]:
        """The tiles the fused kernels' autotuner has chosen so far in this
        process ({(kernel, key): tile}, `triton_kernels.autotuner_choices`)
        and where they come from; None with the reason where none can be
        read."""
        return None, "none: no autotuned kernels on this backend"

    def prepare(self, case: Case, module, x: np.ndarray, cotangent: np.ndarray, dtype: str) -> Step:
        """x: float32 input, cast to `dtype` on the device; cotangent: the
        output gradient of a training step."""
        raise NotImplementedError

    def compiles(self, case: Case) -> bool:
        """Whether preparing and running the case compiles code that a
        persistent cache can keep (`--precompile` runs only those)."""
        return False

    def precompile(self, step: Step) -> None:
        """Compile what the step runs, so that its compilers' caches hold it
        (`bench.compile_cache`'s workers)."""
        raise NotImplementedError

    def measured_flops(self, step: Step) -> tuple[float | None, str]:
        """FLOPs a framework counter sees in one step, and which counter."""
        return None, "none"

    def peak_memory(self, step: Step) -> tuple[int | None, str]:
        """Peak bytes allocated during one step above what was allocated
        before it (inputs and weights excluded), and how it was measured."""
        return None, "none"

    @contextlib.contextmanager
    def trace(self, logdir: str):
        """Capture a profiler trace of what runs inside into logdir."""
        yield

    def annotation(self, name: str):
        """A named range in the profiler's trace around what runs inside."""
        return contextlib.nullcontext()

    def classify(self, error: BaseException) -> str:
        """'oom', 'unsupported' or 'error' for an exception raised by a case."""
        text = f"{type(error).__name__}: {error}"
        if isinstance(error, MemoryError) or re.search(r"out of memory|OutOfMemory|RESOURCE_EXHAUSTED|OOM", text):
            return "oom"
        if isinstance(error, NotImplementedError) or re.search(
            r"No OpKernel|not implemented for|not supported|Unimplemented|UNIMPLEMENTED|NotImplemented"
            r"|no kernel image|is not available on",
            text,
        ):
            return "unsupported"
        return "error"


_MODULES = {name: f"bench.backends.{name}" for name in keras_backend.SUPPORTED}
_current: Runner | None = None


def current() -> Runner:
    """The runner of the backend Keras was imported with."""
    global _current
    if _current is None:
        name = keras.backend.backend()
        if name not in _MODULES:
            raise RuntimeError(
                f"involution-bench runs on the tensorflow, jax and torch Keras backends. Received: KERAS_BACKEND={name}"
            )
        _current = importlib.import_module(_MODULES[name]).RUNNER
    return _current
