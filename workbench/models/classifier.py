"""A classifier from a backbone: augmentation, backbone, dense head, softmax."""

from __future__ import annotations

import keras

from workbench.precision import output_dtype

HEAD_PREFIX = "head"


def augmentation(augment) -> keras.Sequential | None:
    """Keras preprocessing layers for `data.augment`; they act only in training."""
    layers = []
    if augment.flip != "none":
        layers.append(keras.layers.RandomFlip(augment.flip))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, fill_mode="constant"))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, fill_mode="constant"))
    if augment.translation:
        layers.append(keras.layers.RandomTranslation(augment.translation, augment.translation, fill_mode="constant"))
    return keras.Sequential(layers, name="augment") if layers else None


def build_classifier(backbone: keras.Model, head, classes: int, augment=None, seed: int | None = None) -> keras.Model:
    """Raw images -> [augmentation] -> backbone -> hidden Dense layers -> class probabilities."""
    inputs, features = _features(backbone, augment)
    outputs = dense_head(features, head, classes, HEAD_PREFIX, seed, output_name=f"{HEAD_PREFIX}_output")
    return keras.Model(inputs, outputs, name="classifier")


def build_multi_head(backbone: keras.Model, heads, classes: dict[str, int], augment=None, seed: int | None = None) -> keras.Model:
    """Raw images -> [augmentation] -> backbone -> one dense head per entry of `heads`, each its own named output.

    The outputs are a dict keyed by head name, so that Keras names each head's
    loss and metrics after it (`character_accuracy`); each output layer is named
    after its head too.
    """
    inputs, features = _features(backbone, augment)
    outputs = {head.name: dense_head(features, head, classes[head.name], head.name, seed, output_name=head.name) for head in heads}
    return keras.Model(inputs, outputs, name="multi_head")


def dense_head(x, head, classes: int, prefix: str, seed: int | None, output_name: str):
    """`head`'s hidden Dense layers (and dropout) on the features `x`, then a softmax over `classes`."""
    for index, units in enumerate(head.units):
        x = keras.layers.Dense(units, activation=head.activation, name=f"{prefix}_dense_{index}")(x)
        if head.dropout:
            x = keras.layers.Dropout(head.dropout, seed=seed, name=f"{prefix}_dropout_{index}")(x)
    if head.dropout and not head.units:
        x = keras.layers.Dropout(head.dropout, seed=seed, name=f"{prefix}_dropout")(x)
    return keras.layers.Dense(classes, activation="softmax", dtype=output_dtype(), name=output_name)(x)


def _features(backbone: keras.Model, augment):
    """The image input and the backbone's features of it, augmented first where `augment` asks."""
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    x = inputs
    layers = augmentation(augment) if augment is not None else None
    if layers is not None:
        x = layers(x)
    # The backbone runs in inference mode only where its layers are frozen: a frozen
    # BatchNormalization ignores `training`, so passing it through is safe.
    return inputs, backbone(x)
