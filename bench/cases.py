"""Benchmark cases are data: one frozen dataclass, one field per sweep axis.

A case names a registry entry (`layers.registry`) and the parameters it is
built and run with. Axes that do not apply to an entry are normalised to 0
(e.g. `groups` and `reduction_ratio` of Conv2D), so equal work has one id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

# layers.registry and layers.aggregation load Keras: imported where a case is
# looked up, so that the Case type and its axes load no framework (the run
# format, `bench.rundir`, and the reports use them).

DTYPES = ("float32", "mixed_bfloat16", "mixed_float16")
MODES = ("inference", "training")
_DTYPE_TAG = {"float32": "f32", "mixed_bfloat16": "mbf16", "mixed_float16": "mf16"}
_MODE_TAG = {"inference": "inf", "training": "train"}

# What `jit = "default"` means on each backend: how Keras' own fit/predict run
# with jit_compile="auto" (XLA on TensorFlow only when a GPU is present).
DEFAULT_JIT = {"jax": True, "torch": False, "tensorflow": None}  # None: depends on the device


@dataclass(frozen=True, order=True)
class Case:
    """One benchmark case.

    Attributes:
        layer: registry name ("involution", "conv2d", "depthwise" or a model).
        implementation: involution aggregation implementation ("auto" allowed),
            "keras" for the Keras baselines.
        kernel_size, stride, groups, reduction_ratio: layer hyper-parameters
            (0 = does not apply to this layer).
        resolution: input height = width in pixels.
        channels: input channels (C -> C layers; 3 for models).
        batch: images per step.
        dtype: "float32", "mixed_bfloat16" or "mixed_float16" (Keras policies).
        mode: "inference" (forward) or "training" (forward and backward to
            inputs and weights).
        jit: compiled by the backend's compiler (TF: XLA, JAX: jax.jit,
            PyTorch: torch.compile) or not (TF: tf.function graph, JAX: op
            by op, PyTorch: eager).
    """

    layer: str
    implementation: str
    kernel_size: int
    stride: int
    groups: int
    reduction_ratio: int
    resolution: int
    channels: int
    batch: int
    dtype: str
    mode: str
    jit: bool

    @property
    def id(self) -> str:
        from layers import registry

        entry = registry.get(self.layer)
        parts = [self.layer, self.implementation]
        if entry.kind == "layer":
            geometry = f"k{self.kernel_size}s{self.stride}"
            if "groups" in entry.axes:
                geometry += f"g{self.groups}r{self.reduction_ratio}"
            parts.append(geometry)
        parts.append(f"{self.resolution}px")
        if entry.kind == "layer":
            parts.append(f"c{self.channels}")
        parts += [f"b{self.batch}", _DTYPE_TAG[self.dtype], _MODE_TAG[self.mode], "jit" if self.jit else "nojit"]
        return "-".join(parts)

    @property
    def kind(self) -> str:
        from layers import registry

        return registry.get(self.layer).kind

    def params(self) -> dict:
        return asdict(self)

    @classmethod
    def axes(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def int_axes(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.type in ("int", int))

    def normalised(self) -> Case:
        """The same work with non-applicable axes set to 0 (models: 3 channels,
        their fixed resolution)."""
        from layers import registry

        entry = registry.get(self.layer)
        changes = {}
        for axis in ("kernel_size", "stride", "groups", "reduction_ratio", "channels", "resolution"):
            if axis not in entry.axes:
                changes[axis] = 0
        if entry.kind == "model":
            changes["channels"] = 3
            if entry.fixed_resolution is not None:
                changes["resolution"] = entry.fixed_resolution
        return replace(self, **changes)


def not_run(cases: list[tuple[Case, str | None]]) -> dict[str, list[str]]:
    """The ids of the cases that cannot run here, grouped by their reason (in
    the order of first appearance): run.json's `not_run`."""
    grouped: dict[str, list[str]] = {}
    for case, reason in cases:
        if reason:
            grouped.setdefault(reason, []).append(case.id)
    return grouped


def drop_reason(case: Case, backend: str, device: str) -> str | None:
    """Why a case cannot run on this backend and device, or None."""
    from layers import aggregation, registry

    entry = registry.get(case.layer)
    impl = case.implementation
    if entry.involution:
        if impl != "auto":
            if impl not in aggregation.IMPLEMENTATIONS:
                return f"unknown involution implementation {impl!r}"
            spec = aggregation.get(impl)
            if backend not in spec.backends:
                return f"implementation {impl!r} runs on {'/'.join(spec.backends)}, this run uses {backend}"
            if not spec.available(backend):
                return f"implementation {impl!r} needs the package {spec.requires!r}"
            if spec.generates and not spec.trains_from_hidden and case.mode == "training":
                return (f"{impl!r} generates its kernel on chip in inference only; in training it runs "
                        f"{spec.trains_as!r} (see those cases)")
            if spec.fused and device != "gpu":
                return (
                    f"{impl!r} is a fused GPU kernel: without a GPU it runs in an interpreter, "
                    "which tests it (tests/) but says nothing about its speed"
                )
    elif impl != registry.BASELINE_IMPLEMENTATION:
        return f"{case.layer} has only the implementation {registry.BASELINE_IMPLEMENTATION!r}"
    if entry.kind == "layer" and case.channels % max(case.groups, 1):
        return f"groups={case.groups} does not divide channels={case.channels}"
    if entry.kind == "model" and case.resolution < 32:
        return f"{case.layer} needs at least 32 px (it downsamples 32x)"
    return None
