"""The single registry of what the suite compares.

Layers (one C -> C layer at a time): each involution implementation,
`Conv2D(C, K, strides=s, padding="same")` and
`DepthwiseConv2D(K, strides=s, padding="same")`. Models: the Keras example's
two CIFAR-10 classifiers, RedNet and ResNet. Benchmarks, tests and reports
all iterate `ENTRIES`; `build()` makes any of them from a case's parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from layers import models
from layers.involution import Involution

BASELINE_IMPLEMENTATION = "keras"  # the backend's own kernel, through the Keras layer


@dataclass(frozen=True)
class Entry:
    """One comparable layer or model.

    Attributes:
        name: registry key, the `layer` field of a benchmark case.
        kind: "layer" or "model".
        description: one line for tables and reports.
        axes: the case axes this entry reads; others do not apply to it.
        implementations: names usable on the current backend.
        factory: builds the Keras layer or model from keyword parameters.
        fixed_resolution: the only input resolution a model accepts, if any.
        involution: whether it contains involution layers (its
            `implementation` is then an aggregation implementation or "auto").
        counterpart: for an involution model, the convolution model it is
            compared with: the same network with convolutions where it has
            involutions (RedNet-50 and ResNet-50, the example's two models).
    """

    name: str
    kind: str
    description: str
    axes: frozenset[str]
    implementations: Callable[[], list[str]]
    factory: Callable[..., keras.layers.Layer]
    fixed_resolution: int | None = None
    involution: bool = False
    counterpart: str | None = None


def _involution(*, kernel_size, stride, groups, reduction_ratio, implementation, **_):
    return Involution(kernel_size, strides=stride, groups=groups, reduction_ratio=reduction_ratio,
                      implementation=implementation, name="involution")


def _conv2d(*, channels, kernel_size, stride, **_):
    return keras.layers.Conv2D(channels, kernel_size, strides=stride, padding="same", name="conv2d")


def _depthwise(*, kernel_size, stride, **_):
    return keras.layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same", name="depthwise")


def _baseline() -> list[str]:
    return [BASELINE_IMPLEMENTATION]


def _involution_models() -> list[str]:
    return ["auto", *Involution.implementations()]


_LAYER_AXES = frozenset({"kernel_size", "stride", "channels", "resolution", "batch"})

_ENTRIES = [
    Entry("involution", "layer", "Involution (kernel generation + aggregation)",
          _LAYER_AXES | {"groups", "reduction_ratio"}, Involution.implementations, _involution, involution=True),
    Entry("conv2d", "layer", "keras.layers.Conv2D(C, K), C -> C", _LAYER_AXES, _baseline, _conv2d),
    Entry("depthwise", "layer", "keras.layers.DepthwiseConv2D(K)", _LAYER_AXES, _baseline, _depthwise),
    Entry("seed_conv", "model", "Keras example's CIFAR-10 conv model", frozenset({"batch"}),
          _baseline, lambda **_: models.seed_conv_model(), fixed_resolution=32),
    Entry("seed_involution", "model", "Keras example's CIFAR-10 involution model", frozenset({"batch"}),
          _involution_models, lambda *, implementation, **_: models.seed_involution_model(implementation),
          fixed_resolution=32, involution=True, counterpart="seed_conv"),
]
for _depth in sorted(models.STAGES):
    _ENTRIES.append(Entry(
        f"rednet{_depth}", "model", f"RedNet-{_depth} (ImageNet head)", frozenset({"batch", "resolution"}),
        _involution_models,
        lambda *, implementation, resolution, _d=_depth, **_: models.rednet(
            _d, resolution, implementation=implementation
        ),
        involution=True, counterpart=f"resnet{_depth}",
    ))
    _ENTRIES.append(Entry(
        f"resnet{_depth}", "model", f"ResNet-{_depth} (ImageNet head)", frozenset({"batch", "resolution"}),
        _baseline, lambda *, resolution, _d=_depth, **_: models.resnet(_d, resolution),
    ))

ENTRIES: dict[str, Entry] = {entry.name: entry for entry in _ENTRIES}
LAYERS = [name for name, entry in ENTRIES.items() if entry.kind == "layer"]
MODELS = [name for name, entry in ENTRIES.items() if entry.kind == "model"]


def get(name: str) -> Entry:
    if name not in ENTRIES:
        raise ValueError(f"Unknown layer or model {name!r}; registered: {sorted(ENTRIES)}. Received: layer={name!r}")
    return ENTRIES[name]


def build(name: str, **params) -> keras.layers.Layer:
    """Build registry entry `name` from a case's parameters (channels,
    kernel_size, stride, groups, reduction_ratio, implementation, resolution)."""
    entry = get(name)
    implementation = params.get("implementation", BASELINE_IMPLEMENTATION)
    if implementation not in entry.implementations() and implementation != "auto":
        raise ValueError(
            f"{name!r} has no implementation {implementation!r} on this backend; "
            f"use one of {entry.implementations()}. Received: implementation={implementation!r}"
        )
    return entry.factory(**params)
