"""The meta-learner LSTM of Ravi & Larochelle (2017): the inner loop's update rule, learned.

The learner's weights are the cell state of an LSTM. After the inner step's
loss `L_t` and gradient `g_t`, every coordinate `theta` of the learner moves by

    theta_t = f_t * theta_{t-1} - i_t * g_t

where the input gate `i_t` is the coordinate's learning rate at this step and
the forget gate `f_t` its decay, each computed from what the coordinate sees:

    h_t = LSTM([p(g_t), p(L_t)], h_{t-1})                 (the paper's first layer)
    i_t = sigmoid(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I)
    f_t = sigmoid(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F)

with `p` the gradient preprocessing of Andrychowicz et al. (2016). The weights
are shared by all coordinates and each coordinate keeps its own state, so one
meta-learner serves a model of any shape. The initial cell state `theta_0` is
the model's own meta-learned weights, as in MAML.

The meta-learner's variables are learned beside the model's by the outer
optimizer, and saved with a run as its learned inner rates (they play that
part): `MetaLSTMRule` is `KeyedVariables`, as `workbench.meta.rates.InnerRates` is.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from workbench.errors import ArgumentError
from workbench.learned.preprocessing import DEFAULT_P, preprocess_gradients
from workbench.meta.rates import KeyedVariables

__all__ = ["KIND", "UNITS", "KEYS", "MetaLSTMRule", "update"]

KIND = "meta_lstm"
UNITS = 20  # the paper's first layer
INPUTS = 4  # the preprocessed gradient and loss, two numbers each
# Forget gates start near 1 (little decay), as in the paper, whose biases are drawn from [4, 6].
FORGET_BIAS = 5.0
# Gate kernels start small, so that the gates start at their biases.
GATE_KERNEL_SCALE = 0.01

KEYS = (
    "meta_lstm/lstm/kernel",
    "meta_lstm/lstm/recurrent_kernel",
    "meta_lstm/lstm/bias",
    "meta_lstm/input_gate/kernel",
    "meta_lstm/input_gate/bias",
    "meta_lstm/forget_gate/kernel",
    "meta_lstm/forget_gate/bias",
)


def _logit(rate):
    return math.log(rate / (1.0 - rate))


def _initial_values(initial_rate, seed):
    """Initial values, in the order of `KEYS`."""
    if not 0.0 < initial_rate < 1.0:
        raise ArgumentError(
            "The meta-learner LSTM starts its input gate (the learning rate) at the inner learning rate, "
            f"a sigmoid's value: it must lie strictly between 0 and 1. Received: inner_learning_rate={initial_rate}"
        )
    kernel = keras.initializers.GlorotUniform(seed=seed)((INPUTS, 4 * UNITS))
    recurrent = keras.initializers.Orthogonal(seed=seed + 1)((UNITS, 4 * UNITS))
    # Keras's LSTM layout: input, forget, cell and output gates; the forget gate's bias starts at 1.
    bias = np.zeros(4 * UNITS)
    bias[UNITS : 2 * UNITS] = 1.0

    def gate_kernel(offset):  # reads [h, theta, the gate's previous value]
        return keras.initializers.RandomUniform(-GATE_KERNEL_SCALE, GATE_KERNEL_SCALE, seed=seed + offset)((UNITS + 2, 1))

    return [
        kernel,
        recurrent,
        bias,
        gate_kernel(2),
        np.full(1, _logit(initial_rate)),
        gate_kernel(3),
        np.full(1, FORGET_BIAS),
    ]


class MetaLSTMRule(KeyedVariables):
    """The meta-learner LSTM's variables, saved and restored as a learner's inner rates are.

    Args:
        initial_rate: the input gate's starting value, the learning rate of
            the first updates (its bias is the logit of it).
        dtype: the dtype of the learner's weights (float32 under mixed
            precision too: the cell state is the weights themselves).
        seed: seeds the initial kernels, so that a learner's start does not
            depend on what ran before it.
    """

    kind = KIND
    description = "meta-learner LSTM weights"

    def __init__(self, initial_rate, dtype="float32", seed=0):
        self.keys = list(KEYS)
        self.variables = [
            keras.Variable(np.asarray(value), dtype=dtype, trainable=True, name="_".join(key.split("/")[1:]))
            for key, value in zip(KEYS, _initial_values(float(initial_rate), seed), strict=True)
        ]


def _lstm(values, inputs, h, c):
    kernel, recurrent, bias = values
    z = tf.matmul(inputs, kernel) + tf.matmul(h, recurrent) + bias
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


def _gate(kernel, bias, h, theta, previous):
    return tf.sigmoid(tf.matmul(tf.concat([h, theta, previous], axis=-1), kernel) + bias)


def update(values, params, grads, loss, carry):
    """One step of the meta-learner: new parameters and the coordinates' new state.

    Args:
        values: the meta-learner's tensors, in the order of `KEYS`.
        params: the adapted weights before the step (any shapes).
        grads: their gradients of `loss`.
        loss: the scalar loss of the step.
        carry: the state `update` returned at the step before, or None at the first.

    Returns:
        `(new_params, carry)`: tensors shaped like `params`, and the state
        (`h`, `c`, `i`, `f`: one row per coordinate).
    """
    dtype = values[0].dtype
    theta = tf.concat([tf.reshape(tf.cast(p, dtype), [-1]) for p in params], axis=0)[:, None]
    gradient = tf.concat([tf.reshape(tf.cast(g, dtype), [-1]) for g in grads], axis=0)[:, None]
    coordinates = tf.shape(theta)[0]
    if carry is None:
        zeros = tf.zeros([coordinates, UNITS], dtype)
        carry = (zeros, zeros, tf.zeros([coordinates, 1], dtype), tf.zeros([coordinates, 1], dtype))
    h, c, input_gate, forget_gate = carry
    loss_inputs = preprocess_gradients(tf.reshape(tf.cast(loss, dtype), [1, 1]), DEFAULT_P)
    inputs = tf.concat([preprocess_gradients(gradient, DEFAULT_P), tf.tile(loss_inputs, [coordinates, 1])], axis=-1)
    h, c = _lstm(values[:3], inputs, h, c)
    input_gate = _gate(values[3], values[4], h, theta, input_gate)
    forget_gate = _gate(values[5], values[6], h, theta, forget_gate)
    theta = forget_gate * theta - input_gate * gradient

    new_params, start = [], 0
    for p in params:
        size = int(np.prod(p.shape))
        new_params.append(tf.cast(tf.reshape(theta[start : start + size, 0], tf.shape(p)), p.dtype))
        start += size
    return new_params, (h, c, input_gate, forget_gate)
