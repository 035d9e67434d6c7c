"""The registry of involution aggregation implementations.

Every implementation computes the same function (see `_common`) from the input
x (B, H, W, C) and the generated kernel (B, Ho, Wo, G*K*K). A new variant is
one module with an `aggregate(x, kernel, kernel_size, stride, groups)` function
and one `Implementation` entry below; the layer, the benchmarks, the tests and
the reports all iterate this registry.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from keras import backend

ALL_BACKENDS = ("tensorflow", "jax", "torch")


@dataclass(frozen=True)
class Implementation:
    """One way to compute the aggregation.

    Attributes:
        name: the value of `Involution(implementation=...)`.
        modules: for each Keras backend it runs on, the module (under
            `layers.aggregation`) holding its `aggregate` there.
        description: one line for tables and reports.
        materialises_patches: whether it builds a (B, Ho, Wo, K*K, C) tensor.
        fused: a hand-written kernel (only meaningful to time on a GPU; on a
            CPU it runs in the kernel language's interpreter).
        requires: for each backend, the Python packages it needs there
            beyond the backend itself.
        generates: it also computes the kernel generation, inside the
            kernel, in inference: its module's `involution(x, pooled,
            generation, kernel_size, stride, groups)` is called instead of
            the generation branch and `aggregate` (which training and
            `return_kernel=True` still use).
        trains_from_hidden: a generating implementation that also generates
            inside its kernel in training: the layer computes the bottleneck
            (batch statistics) and its module's `aggregate_hidden(x, hidden,
            span_kernel, span_bias, kernel_size, stride, groups)` makes the
            weights from it on chip, forward and backward; the kernel tensor
            is never stored, only the hidden one (C/r values a pixel).
        trains_as: for a generating implementation, the implementation
            whose aggregation its `aggregate` is (what `return_kernel=True`
            runs, and training unless `trains_from_hidden`).
    """

    name: str
    modules: dict[str, str]
    description: str
    materialises_patches: bool
    fused: bool = False
    requires: dict[str, tuple[str, ...]] = field(default_factory=dict)
    generates: bool = False
    trains_from_hidden: bool = False
    trains_as: str | None = None

    @property
    def backends(self) -> tuple[str, ...]:
        """The Keras backends it runs on."""
        return tuple(self.modules)

    def missing(self, backend_name: str | None = None) -> list[str]:
        """The packages it needs on the backend that are not installed."""
        needed = self.requires.get(backend_name or backend.backend(), ())
        return [package for package in needed if importlib.util.find_spec(package) is None]

    def available(self, backend_name: str | None = None) -> bool:
        backend_name = backend_name or backend.backend()
        return backend_name in self.modules and not self.missing(backend_name)

    def module(self, backend_name: str | None = None) -> ModuleType:
        """Its module on the backend (the current one by default)."""
        backend_name = backend_name or backend.backend()
        if backend_name not in self.modules:
            raise ValueError(f"{self.name!r} runs on the {', '.join(self.backends)} backend(s), not on "
                             f"{backend_name}. Received: backend={backend_name!r}")
        name = f"layers.aggregation.{self.modules[backend_name]}"
        # Once imported, taken from sys.modules: torch.compile cannot trace
        # importlib, and a graph break inside the layer's profiler stage would
        # leave the rest of its call uncompiled (docs/PERF.md, section 29).
        loaded = sys.modules.get(name)
        return loaded if loaded is not None else importlib.import_module(name)

    def function(self) -> Callable:
        return self.module().aggregate

    def generating_function(self) -> Callable:
        if not self.generates:
            raise ValueError(f"{self.name!r} aggregates a generated kernel; it does not generate one. "
                             f"Received: implementation={self.name!r}")
        return self.module().involution

    def hidden_function(self) -> Callable:
        if not self.trains_from_hidden:
            raise ValueError(f"{self.name!r} does not generate its kernel from the bottleneck in training. "
                             f"Received: implementation={self.name!r}")
        return self.module().aggregate_hidden

    def largest_intermediate_elements(
        self, batch: int, out_h: int, out_w: int, channels: int, kernel_size: int
    ) -> int:
        """Elements of the largest tensor the aggregation itself creates
        (the generated kernel is counted by the caller)."""
        per_pixel = channels * kernel_size * kernel_size if self.materialises_patches else channels
        return batch * out_h * out_w * per_pixel


def _everywhere(module: str) -> dict[str, str]:
    return dict.fromkeys(ALL_BACKENDS, module)


# The Triton kernels are one module (`triton_kernels`) launched from each
# backend's module. On JAX they go through jax-triton on a GPU and Triton's
# interpreter (which takes PyTorch tensors) elsewhere: see `triton_jax`.
_TRITON = {"torch": "triton_torch", "jax": "triton_jax"}
_TRITON_NEEDS = {"torch": ("triton",), "jax": ("triton", "jax_triton")}

IMPLEMENTATIONS: dict[str, Implementation] = {
    impl.name: impl
    for impl in (
        Implementation(
            "reference", _everywhere("reference"),
            "patch tensor then multiply-sum (tf.image.extract_patches on TensorFlow, "
            "stacked slices elsewhere), as the Keras example",
            materialises_patches=True,
        ),
        Implementation(
            "shiftsum", _everywhere("shiftsum"),
            "sum of K*K shifted windows times their weight, no patch tensor",
            materialises_patches=False,
        ),
        Implementation(
            "xla", {"tensorflow": "xla"},
            "shift-sum compiled by XLA (tf.function(jit_compile=True))",
            materialises_patches=False,
        ),
        Implementation(
            "unfold", {"torch": "unfold"},
            "torch.nn.functional.unfold on NCHW, as the official PyTorch code",
            materialises_patches=True,
        ),
        Implementation(
            "pallas", {"jax": "pallas_kernels"},
            "fused Pallas kernel (Triton on GPU), custom VJP",
            materialises_patches=False, fused=True,
        ),
        Implementation(
            "pallas_fused", {"jax": "pallas_fused"},
            "Pallas kernel that also generates the weights on chip (the kernel tensor never reaches "
            "memory): the whole layer in inference, span and aggregation from the stored bottleneck in "
            "training; return_kernel through 'pallas'",
            materialises_patches=False, fused=True, generates=True, trains_from_hidden=True, trains_as="pallas",
        ),
        Implementation(
            "triton", _TRITON,
            "fused Triton kernel with its backward kernels (PyTorch: autograd Function; JAX: custom VJP, "
            "through jax-triton)",
            materialises_patches=False, fused=True, requires=_TRITON_NEEDS,
        ),
        Implementation(
            "triton_fused", _TRITON,
            "Triton kernel that also generates the weights on chip (the kernel tensor never reaches "
            "memory): the whole layer in inference, span and aggregation from the stored bottleneck in "
            "training; return_kernel through 'triton'",
            materialises_patches=False, fused=True, requires=_TRITON_NEEDS, generates=True,
            trains_from_hidden=True, trains_as="triton",
        ),
    )
}


def names(backend_name: str | None = None) -> list[str]:
    """Implementations usable on a backend (the current one by default)."""
    return [name for name, impl in IMPLEMENTATIONS.items() if impl.available(backend_name)]


def get(name: str) -> Implementation:
    return IMPLEMENTATIONS[name]


def kernel_switches(backend_name: str | None = None) -> dict[str, int]:
    """How the fused kernels are built on a backend (the current one by
    default): {environment variable: value} of the switches a GPU session
    times against each other, those that apply there: INVOLUTION_UNROLL_WINDOW
    (`_common.rows_per_step`) where a fused kernel runs, INVOLUTION_TILE_WIDTH
    (`triton_kernels.tile_width`) where the Triton kernels run; none on
    TensorFlow. The environment is read once per process (`_common.switch`),
    and reading them checks them: a bad value raises ValueError, one line,
    which a sweep and `bench.targets` give before their first case."""
    from layers.aggregation import _common

    switches = {}
    if any(impl.fused and impl.available(backend_name) for impl in IMPLEMENTATIONS.values()):
        switches[_common.UNROLL_WINDOW] = int(_common.unroll_window())
    if get("triton").available(backend_name):
        from layers.aggregation.triton_kernels import tile_width

        switches[_common.TILE_WIDTH] = tile_width()
    return switches
