"""The small networks of the MAML paper, as plain functional Keras models.

Layers are named so that recipes and algorithms can point at them; the last
Dense layer is always `HEAD_LAYER` ("head"), the part ANIL adapts.
"""

import keras

from workbench.errors import ArgumentError
from workbench.precision import output_dtype

__all__ = ["HEAD_LAYER", "build_mlp", "build_conv4"]

HEAD_LAYER = "head"


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")


def _check_shape(input_shape, rank, function_name):
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if shape is None or len(shape) != rank or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ArgumentError(
            f"`{function_name}` expects `input_shape` to be {rank} positive integers "
            "(without the batch axis). "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def build_mlp(input_shape, outputs, hidden_units=(40, 40), dtype=None, name="mlp"):
    """An MLP with ReLU hidden layers (two of 40 units by default) and a linear head.

    Args:
        input_shape: shape of one example, e.g. `(1,)` for sinusoid regression.
        outputs: units of the head (1 for regression, N for N-way logits).
        hidden_units: sizes of the hidden Dense layers, named `hidden_1`, ...
        dtype: optional dtype policy of every layer (e.g. "float64" in tests);
            the head computes in its variable dtype (float32 under a mixed policy).
    """
    input_shape = _check_shape(input_shape, 1, "build_mlp")
    _check_positive("outputs", outputs)
    for units in hidden_units:
        _check_positive("hidden_units", units)
    inputs = keras.Input(input_shape, name="inputs", dtype=dtype)
    x = inputs
    for index, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}", dtype=dtype)(x)
    predictions = keras.layers.Dense(outputs, name=HEAD_LAYER, dtype=output_dtype(dtype))(x)
    return keras.Model(inputs, predictions, name=name)


def build_conv4(input_shape, classes, filters=64, blocks=4, dtype=None, name="conv4"):
    """The four-block convolutional net of the MAML paper, with logits out.

    Each block is a 3x3 'same' convolution, BatchNormalization, ReLU and 2x2
    max-pooling (`block{i}_conv`, `block{i}_bn`, `block{i}_relu`,
    `block{i}_pool`); then `flatten` and the Dense `head`.

    Args:
        input_shape: `(height, width, channels)` of one image.
        classes: logits of the head (N for N-way tasks).
        filters: filters of every convolution.
        blocks: number of blocks; each halves the spatial size, so the image
            must be at least `2**blocks` pixels on each side.
        dtype: optional dtype policy of every layer; the head computes in its
            variable dtype (float32 under a mixed policy).
    """
    input_shape = _check_shape(input_shape, 3, "build_conv4")
    _check_positive("classes", classes)
    _check_positive("filters", filters)
    _check_positive("blocks", blocks)
    if min(input_shape[:2]) < 2**blocks:
        raise ArgumentError(
            f"`build_conv4` halves the image {blocks} times, so each side must be "
            f"at least {2**blocks} pixels. Received: input_shape={input_shape!r}"
        )
    inputs = keras.Input(input_shape, name="inputs", dtype=dtype)
    x = inputs
    for index in range(1, blocks + 1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{index}_conv", dtype=dtype)(x)
        x = keras.layers.BatchNormalization(name=f"block{index}_bn", dtype=dtype)(x)
        x = keras.layers.ReLU(name=f"block{index}_relu", dtype=dtype)(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{index}_pool", dtype=dtype)(x)
    x = keras.layers.Flatten(name="flatten", dtype=dtype)(x)
    logits = keras.layers.Dense(classes, name=HEAD_LAYER, dtype=output_dtype(dtype))(x)
    return keras.Model(inputs, logits, name=name)
