"""The two classifiers of the Keras example "Involutional neural networks"
(docs/SOURCES.md): same layers, and on CIFAR-10's 32x32x3 images the same
parameter counts. `input_shape` builds them for another data set (Fashion-MNIST:
28x28x1; the involutions then work on its one channel)."""

from __future__ import annotations

import keras
from keras import layers as kl

from layers.involution import Involution

INPUT_SHAPE = (32, 32, 3)
CLASSES = 10


def _classifier(x, inputs, name: str) -> keras.Model:
    """The example's head: flatten, a 64-unit ReLU dense layer, 10 logits."""
    x = kl.Flatten(name="flatten")(x)
    x = kl.Dense(64, activation="relu", name="dense")(x)
    return keras.Model(inputs, kl.Dense(CLASSES, name="logits")(x), name=name)


def seed_conv_model(input_shape: tuple[int, int, int] = INPUT_SHAPE) -> keras.Model:
    """Three 3x3 convolutions (32, 64, 64 filters), two max-pools, a 64-unit
    dense layer and 10 logits: 319,178 trainable parameters on 32x32x3."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for index, filters in enumerate((32, 64, 64), start=1):
        x = kl.Conv2D(filters, 3, padding="same", name=f"conv_{index}")(x)
        x = kl.ReLU(name=f"relu_{index}")(x)
        if index < 3:
            x = kl.MaxPooling2D(2, name=f"pool_{index}")(x)
    return _classifier(x, inputs, "seed_conv")


def seed_involution_model(implementation: str = "auto",
                          input_shape: tuple[int, int, int] = INPUT_SHAPE) -> keras.Model:
    """Three 3x3 involutions on the image's channels (one group, reduction 2),
    two max-pools, a 64-unit dense layer and 10 logits: 13,074 trainable and
    6 non-trainable parameters on 32x32x3. The involutions are named
    inv_1..inv_3 as in the example, whose kernel maps are drawn from them."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for index in (1, 2, 3):
        x = Involution(3, groups=1, reduction_ratio=2, implementation=implementation, name=f"inv_{index}")(x)
        x = kl.ReLU(name=f"relu_{index}")(x)
        if index < 3:
            x = kl.MaxPooling2D(2, name=f"pool_{index}")(x)
    return _classifier(x, inputs, "seed_involution")


def kernel_map_model(model: keras.Model) -> keras.Model:
    """A model that maps images to the per-pixel sum of the generated kernels
    of inv_1, inv_2 and inv_3 (the example's "attention maps").

    Built from the trained model's layers: new Involution layers that share
    their configuration and weights, with `return_kernel=True`.
    """
    inputs = keras.Input(tuple(model.input_shape[1:]), name="image")
    x = inputs
    maps = []
    for index in (1, 2, 3):
        trained = model.get_layer(f"inv_{index}")
        config = trained.get_config() | {"return_kernel": True, "name": f"inv_{index}_kernels"}
        probe = Involution.from_config(config)
        x, kernel = probe(x)
        probe.set_weights(trained.get_weights())
        maps.append(keras.ops.sum(kernel, axis=(3, 4, 5)))  # (B, H, W)
        x = kl.ReLU()(x)
        if index < 3:
            x = kl.MaxPooling2D(2)(x)
    return keras.Model(inputs, maps, name="seed_kernel_maps")
