"""Which layers of a backbone train: layer selectors and the BatchNorm policy.

Selectors (`all | none | {last: N} | {until: name} | {match: regex}`) are
resolved against the backbone's real layers, nested models flattened in order,
the input preprocessing left out. `last` counts from the head end; `until`
selects from the input up to and including the named layer.

Keras reads `trainable` at `compile()`, so callers compile after every change.
"""

from __future__ import annotations

import difflib
import re

import keras

from workbench.errors import ModelError
from workbench.models.preprocessing import is_preprocessing


def selectable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The leaf layers of `model` in order, nested models flattened, preprocessing left out."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or is_preprocessing(layer):
            continue
        if isinstance(layer, keras.Model):
            layers.extend(selectable_layers(layer))
        else:
            layers.append(layer)
    return layers


def select(layers: list[keras.layers.Layer], selector) -> list[keras.layers.Layer]:
    """The layers a selector names; an error lists near matches when it names none."""
    if selector == "all":
        return list(layers)
    if selector == "none":
        return []
    ((kind, argument),) = selector.items()
    if kind == "last":
        return list(layers[len(layers) - argument :]) if argument else []
    names = [layer.name for layer in layers]
    if kind == "until":
        if argument not in names:
            near = difflib.get_close_matches(argument, names, n=5, cutoff=0.4)
            raise ModelError(f"until: no layer named {argument!r} in the base" + (f"; near matches: {', '.join(near)}" if near else ""))
        return list(layers[: names.index(argument) + 1])
    pattern = re.compile(argument)
    chosen = [layer for layer in layers if pattern.search(layer.name)]
    if not chosen:
        near = difflib.get_close_matches(argument, names, n=5, cutoff=0.3)
        raise ModelError(
            f"match: the pattern {argument!r} matches no layer of the base" + (f"; near matches: {', '.join(near)}" if near else "")
        )
    return chosen


def set_trainable(backbone: keras.Model, trainable: list[keras.layers.Layer], batchnorm: str) -> None:
    """Make exactly `trainable` train; BatchNorm layers stay frozen under `batchnorm: frozen`.

    A frozen BatchNormalization layer runs in inference mode in Keras 3, so its
    moving statistics never change, even when `fit()` passes `training=True`.
    """
    backbone.trainable = True  # containers must be trainable for any leaf to train
    chosen = {id(layer) for layer in trainable}
    for layer in selectable_layers(backbone):
        layer.trainable = id(layer) in chosen
        if batchnorm == "frozen" and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    for layer in backbone.layers:
        if is_preprocessing(layer):
            layer.trainable = False


def trainable_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in selectable_layers(backbone) if layer.trainable]


def freeze(backbone: keras.Model, selector, batchnorm: str) -> None:
    """Apply `freeze.layers`: the selected layers are frozen, the rest train."""
    layers = selectable_layers(backbone)
    frozen = {id(layer) for layer in select(layers, selector)}
    set_trainable(backbone, [layer for layer in layers if id(layer) not in frozen], batchnorm)


def unfreeze(backbone: keras.Model, selector, batchnorm: str) -> None:
    """Apply a phase's `unfreeze`: the selected layers train too, from now on."""
    layers = selectable_layers(backbone)
    set_trainable(backbone, trainable_layers(backbone) + select(layers, selector), batchnorm)
