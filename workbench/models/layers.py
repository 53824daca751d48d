"""Questions about a model's layers, nested models included."""

from collections.abc import Iterator

import keras


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, nested models included (depth first)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def is_convolutional(model: keras.Model) -> bool:
    """Whether `model` holds a convolution (which decides how it is best compiled and batched)."""
    return any("Conv" in type(layer).__name__ for layer in all_layers(model))
