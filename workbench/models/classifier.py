"""A classifier from a backbone: augmentation, backbone, dense head, softmax."""

from __future__ import annotations

import keras

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
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    x = inputs
    layers = augmentation(augment) if augment is not None else None
    if layers is not None:
        x = layers(x)
    # The backbone runs in inference mode only where its layers are frozen: a frozen
    # BatchNormalization ignores `training`, so passing it through is safe.
    x = backbone(x)
    for index, units in enumerate(head.units):
        x = keras.layers.Dense(units, activation=head.activation, name=f"{HEAD_PREFIX}_dense_{index}")(x)
        if head.dropout:
            x = keras.layers.Dropout(head.dropout, seed=seed, name=f"{HEAD_PREFIX}_dropout_{index}")(x)
    if head.dropout and not head.units:
        x = keras.layers.Dropout(head.dropout, seed=seed, name=f"{HEAD_PREFIX}_dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name=f"{HEAD_PREFIX}_output")(x)
    return keras.Model(inputs, outputs, name="classifier")
