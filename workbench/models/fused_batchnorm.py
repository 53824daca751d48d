"""BatchNormalization through TensorFlow's fused kernel.

Keras 3 computes BatchNormalization on the TensorFlow backend as separate
operations: the batch moments, then the normalisation, each a pass over the
activations, with casts to float32 and back around them under a bfloat16 or
float16 policy. tf.keras used `FusedBatchNormV3` instead, one kernel forward
and one backward that reads bfloat16 and float16 activations directly
(keras-team/keras-core#225 tracks the difference).

`FusedBatchNormalization` is the Keras layer with that kernel in `call`: the
same weights, arguments, outputs (up to float rounding), gradients and moving
statistics. Its gradient is the kernel's own; differentiating that again goes
through TensorFlow's composite of separate operations, no faster than the
exact BatchNorm's, so second-order MAML keeps its exact BatchNorm on the
passes it differentiates twice.

Saved models hold only standard layers. Transfer training switches the
layers' class for the time of a fit (`fused_batchnorm`), and meta-learners
run a clone (`with_fused_batchnorm` in `workbench.meta.batchnorm`).
"""

import contextlib

import keras
import tensorflow as tf

from workbench.models.layers import all_layers

__all__ = ["FusedBatchNormalization", "fused_batchnorm"]

# `tf.compat.v1.nn.fused_batch_norm` raises smaller epsilons to this (cuDNN's floor).
_SMALLEST_EPSILON = 1.001e-5
_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="workbench")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by `FusedBatchNormV3` where the kernel pays.

    The kernel serves training-mode calls of a trainable layer on 4-D
    channels-last inputs of a floating dtype, without mask, renormalisation
    or synchronized moments, and with `epsilon >= 1.001e-5`. Elsewhere the
    layer is Keras's own, inference mode included: there Keras's two
    element-wise operations were as fast in float32, and the kernel slower in
    bfloat16 (ResNet50 with frozen BatchNorm, benchmarks/RESULTS.md).
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else keras.ops.ones((channels,), "float32")
        beta = self.beta if self.center else keras.ops.zeros((channels,), "float32")
        gamma, beta = tf.cast(gamma, "float32"), tf.cast(beta, "float32")
        outputs, mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
        # The kernel normalises with the batch variance but returns it with
        # Bessel's correction; Keras's moving variance averages the batch variance.
        count = tf.cast(tf.size(inputs) // channels, "float32")
        variance = corrected_variance * (tf.maximum(count - 1.0, 1.0) / count)
        momentum = tf.cast(self.momentum, "float32")
        self.moving_mean.assign(tf.cast(self.moving_mean, "float32") * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(tf.cast(self.moving_variance, "float32") * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs, training, mask):
        """Whether the kernel serves this call (see the class docstring)."""
        return (
            bool(training)
            and self.trainable
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (3, -1)
            and self.epsilon >= _SMALLEST_EPSILON
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
        )


@contextlib.contextmanager
def fused_batchnorm(model: keras.Model):
    """While inside, every `keras.layers.BatchNormalization` of `model` is a `FusedBatchNormalization`.

    The layers' class is switched in place, not the layers cloned: weights,
    names, `trainable` flags and everything Keras traced or compiled stay as
    they are, and on exit the model is again made of standard layers (what a
    `.keras` file stores). Functions traced inside keep the fused kernel.
    """
    switched = [layer for layer in all_layers(model) if type(layer) is keras.layers.BatchNormalization]
    for layer in switched:
        layer.__class__ = FusedBatchNormalization
    try:
        yield model
    finally:
        for layer in switched:
            layer.__class__ = keras.layers.BatchNormalization
