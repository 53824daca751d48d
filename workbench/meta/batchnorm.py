"""BatchNormalization whose batch moments keep their full gradient.

Keras 3 (TensorFlow backend) takes batch moments through `tf.nn.moments`,
which computes the variance around `stop_gradient(mean)`. The forward values
and first derivatives are exact (the derivative of the variance with respect
to the mean is zero at the mean), but second derivatives are not, so
second-order MAML meta-gradients through BatchNormalization come out wrong.
`ExactBatchNormalization` computes the same moments without the stop.

Saved models should only contain standard layers: meta-learners train with
`with_exact_batchnorm(model)` and export with `with_standard_batchnorm(model)`,
which swap the layer class and copy every weight (moving statistics included).
`with_fused_batchnorm(model)` makes the twin that runs the passes a meta step
differentiates only once (the query set, first-order inner loops) through
TensorFlow's fused kernel.
"""

import keras
from keras import ops

from workbench.errors import ArgumentError
from workbench.models.fused_batchnorm import FusedBatchNormalization
from workbench.models.layers import all_layers

__all__ = [
    "ExactBatchNormalization",
    "with_exact_batchnorm",
    "with_standard_batchnorm",
    "with_fused_batchnorm",
    "has_batchnorm",
    "set_moving_statistics",
]


@keras.saving.register_keras_serializable(package="workbench")
class ExactBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with fully differentiable batch moments.

    Same arguments, weights and forward values as the Keras layer; only the
    gradient of the batch variance with respect to the batch mean differs
    (Keras stops it). Masked and synchronized moments are left to Keras.
    """

    def _moments(self, inputs, mask):
        if mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        mean = ops.mean(inputs, axis=self._reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(inputs - mean), axis=self._reduction_axes, keepdims=False)
        return ops.squeeze(mean, axis=self._reduction_axes), variance


def has_batchnorm(model):
    """Whether `model` (or a model nested in it) holds a BatchNormalization layer."""
    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in all_layers(model))


def _convert(model, target_class, function_name):
    if not isinstance(model, keras.Model):
        raise ArgumentError(f"`{function_name}` expects a functional or sequential Keras model. Received: model={model!r}")

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            return target_class.from_config(config)
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except ValueError as error:
        raise ArgumentError(
            f"`{function_name}` expects a functional or sequential Keras model; "
            "subclassed models cannot be cloned layer by layer. "
            f"Received: model of type {type(model).__name__} ({error})"
        ) from error
    weights = model.get_weights()
    if [w.shape for w in weights] != [tuple(v.shape) for v in clone.weights]:
        raise ArgumentError(
            f"`{function_name}` could not map the weights of the model onto its "
            "clone (the layers create their weights in a different order). "
            f"Received: model={model.name!r}"
        )
    clone.set_weights(weights)
    return clone


def with_exact_batchnorm(model):
    """Returns a clone of `model` with every BatchNormalization made exact.

    The clone holds copies of all weights (moving statistics included) and
    computes the same outputs; it is a new model even when `model` has no
    BatchNormalization layer. Works on functional and sequential models,
    nested ones included.
    """
    return _convert(model, ExactBatchNormalization, "with_exact_batchnorm")


def with_standard_batchnorm(model):
    """Returns a clone of `model` using only `keras.layers.BatchNormalization`.

    The inverse of `with_exact_batchnorm`: save this clone, and the saved
    `.keras` file loads with `keras.models.load_model(path, safe_mode=True)`
    without registering any custom object.
    """
    return _convert(model, keras.layers.BatchNormalization, "with_standard_batchnorm")


def with_fused_batchnorm(model):
    """Returns a clone of `model` whose BatchNormalization layers run the fused kernel.

    Same weights, outputs and gradients; it serves the passes differentiated
    once, since its second derivatives are no faster than the exact layer's
    (see `FusedBatchNormalization`).
    """
    return _convert(model, FusedBatchNormalization, "with_fused_batchnorm")


def set_moving_statistics(model, x):
    """Sets every trainable BatchNormalization's moving statistics to the batch moments of `x`.

    Afterwards the model gives in inference mode on `x` what it gives in
    training mode. Frozen (non-trainable) layers keep their statistics, as
    they do in training mode. Runs eagerly; `x` is one batch.
    """
    norms = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        # With momentum 0, one training-mode pass leaves exactly the batch
        # moments in the moving statistics.
        for layer in norms:
            layer.momentum = 0.0
        _, state = model.stateless_call(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            x,
            training=True,
        )
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    for variable, value in zip(model.non_trainable_variables, state, strict=True):
        variable.assign(value)
