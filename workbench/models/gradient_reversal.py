"""The gradient reversal layer of domain-adversarial training (Ganin & Lempitsky 2015).

Y. Ganin and V. Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
ICML 2015. Between a feature extractor and a domain classifier, the layer passes
features forward unchanged and multiplies the gradient flowing back by `-weight`:
the domain classifier learns to tell the domains apart while the features below
learn to make that impossible.

`weight` is a non-trainable variable, not a Python number, so that a training loop
can `assign` the schedule's value each step (`workbench.domain.schedule`) without
retracing a `tf.function` or recompiling. It is saved with the model's weights.
"""

import math
from numbers import Real

import keras
import tensorflow as tf

from workbench.errors import ArgumentError

__all__ = ["GradientReversal"]


@tf.custom_gradient
def _reverse_gradient(inputs, weight):
    def gradient(upstream):
        # The weight is a schedule, not something to learn: it gets no gradient.
        return -tf.cast(weight, upstream.dtype) * upstream, None

    return tf.identity(inputs), gradient


@keras.saving.register_keras_serializable(package="workbench")
class GradientReversal(keras.layers.Layer):
    """Identity forward; gradient times `-weight` backward.

    Args:
        weight: the initial reversal weight (lambda in the papers), a finite number;
            0 cuts the gradient, 1 reverses it unscaled. Assign a new value to
            `layer.weight` during training.
    """

    def __init__(self, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight):
            raise ArgumentError(f"The reversal weight must be a finite number, e.g. 1.0. Received: weight={weight!r}")
        self._initial_weight = float(weight)
        self.weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self._initial_weight),
            trainable=False,
            name="weight",
        )
        self.built = True

    def call(self, inputs):
        return _reverse_gradient(inputs, self.weight.value)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        # The current value travels with the weights; the config gives the starting one.
        return {**super().get_config(), "weight": self._initial_weight}
