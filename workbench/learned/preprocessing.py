"""The gradient preprocessing of Andrychowicz et al. (2016), as a registered Keras layer.

Gradients of different parameters differ by orders of magnitude, which an LSTM
with a fixed input scale handles badly. The paper feeds each coordinate's
gradient `g` as two numbers:

    (log|g| / p, sign g)   if |g| >= e^-p
    (-1, e^p g)            otherwise

so that large gradients are seen by their log-magnitude and sign, and tiny
ones (below e^-p) linearly. With p = 10 the threshold is about 4.5e-5.
"""

from __future__ import annotations

import math

import keras
from keras import ops

DEFAULT_P = 10.0
SERIALIZATION_PACKAGE = "workbench.learned"


def preprocess_gradients(gradients, p: float = DEFAULT_P):
    """The paper's two inputs per coordinate: `[..., 1]` gradients to `[..., 2]`."""
    threshold = math.exp(-p)
    magnitude = ops.abs(gradients)
    large = magnitude >= threshold
    # The log of the clipped magnitude, so that a zero gradient gives no -inf (and no NaN gradient) in the unused branch.
    log_part = ops.where(large, ops.log(ops.maximum(magnitude, threshold)) / p, -ops.ones_like(gradients))
    sign_part = ops.where(large, ops.sign(gradients), math.exp(p) * gradients)
    return ops.concatenate([log_part, sign_part], axis=-1)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class GradientPreprocessing(keras.layers.Layer):
    """`preprocess_gradients` as a layer: one gradient per row in, its two preprocessed inputs out."""

    def __init__(self, p: float = DEFAULT_P, **kwargs):
        super().__init__(**kwargs)
        self.p = float(p)

    def call(self, gradients):
        return preprocess_gradients(gradients, self.p)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)

    def get_config(self):
        return {**super().get_config(), "p": self.p}
