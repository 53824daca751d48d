"""The inner loop of the MAML family: gradient steps on fast weights.

Fast weights are plain tensors, never assigned to the model's variables:
the model runs on them through `Layer.stateless_call`, so that the outer
`tf.GradientTape` sees the whole path from the meta-parameters, through the
inner gradients, to the query loss (second order). `first_order=True` stops
the inner gradients instead (FOMAML, Reptile, evaluation).

Everything here is a pure function of its arguments and runs the same
eagerly, inside `tf.function`, and inside `tf.vectorized_map`.
"""

import tensorflow as tf

from workbench.errors import ArgumentError
from workbench.meta import meta_lstm

__all__ = [
    "LOSSES",
    "RATE_KINDS",
    "loss_and_metric",
    "inner_rate",
    "inner_loop",
    "multi_step_weights",
]

# Loss name -> name of the metric reported with it.
LOSSES = {"mse": "mse", "sparse_categorical_crossentropy": "accuracy"}

# How inner learning rates are held: one fixed float, one learned tensor the
# shape of each adapted variable (Meta-SGD), one learned rate per adapted
# variable and inner step (MAML++ "LSLR"), or computed per coordinate and step
# by the meta-learner LSTM (Ravi & Larochelle), whose weights `rates` then holds.
RATE_KINDS = ("fixed", "per_parameter", "per_step", meta_lstm.KIND)


def loss_and_metric(loss, y, predictions):
    """Returns `(loss, metric)` of one task as scalars of the predictions' dtype.

    - "mse": mean squared error; the metric is the same number.
    - "sparse_categorical_crossentropy": predictions are logits `[n, classes]`
      and `y` integer labels `[n]` (or `[n, 1]`); the metric is accuracy.
    """
    if loss == "mse":
        y = tf.reshape(tf.cast(y, predictions.dtype), tf.shape(predictions))
        value = tf.reduce_mean(tf.square(predictions - y))
        return value, value
    if loss == "sparse_categorical_crossentropy":
        labels = tf.reshape(tf.cast(y, tf.int32), [-1])
        value = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=predictions))
        hits = tf.equal(tf.argmax(predictions, axis=-1, output_type=tf.int32), labels)
        return value, tf.reduce_mean(tf.cast(hits, predictions.dtype))
    raise ArgumentError(f"Expected `loss` to be one of {sorted(LOSSES)}. Received: loss={loss!r}")


def inner_rate(kind, rates, index, step):
    """The learning rate of adapted variable `index` at inner step `step` (0-based).

    `rates` is a float for "fixed", else a list with one tensor per adapted
    variable. Per-step rates are reused from the last learned step when
    evaluation runs more steps than training did.
    """
    if kind == "fixed":
        return rates
    if kind == "per_parameter":
        return rates[index]
    if kind == "per_step":
        learned_steps = rates[index].shape[0]
        return rates[index][min(step, learned_steps - 1)]
    raise ArgumentError(f"Expected `kind` to be one of {RATE_KINDS}. Received: kind={kind!r}")


def inner_loop(
    model,
    weights,
    state,
    x,
    y,
    *,
    loss,
    steps,
    adapted,
    rate_kind,
    rates,
    first_order,
    after_step=None,
):
    """Adapts `weights` to one task's `(x, y)` with `steps` gradient steps.

    Args:
        model: the Keras model; only its structure is used.
        weights: tensors, one per `model.trainable_variables`.
        state: tensors, one per `model.non_trainable_variables`.
        x, y: one task's examples (no task axis).
        loss: a key of `LOSSES`.
        steps: Python int; the loop is unrolled.
        adapted: indices into `weights` of the tensors the loop changes (all
            of them for MAML, the head's for ANIL); the others stay the very
            same tensors.
        rate_kind, rates: see `inner_rate`; for "meta_lstm", `rates` is the
            meta-learner's tensors and `meta_lstm.update` makes each step.
        first_order: stop the gradient through the inner gradients (and,
            for the meta-learner LSTM, through the losses it reads).
        after_step: optional `callback(step, fast_weights)` run after each
            step, `step` counting from 1 (multi-step losses, learning curves).

    Returns:
        `(fast_weights, first_state)`: the adapted weights (a new list) and the
        non-trainable state that the first forward pass produced (updated
        BatchNormalization moving statistics), or `None` when `steps == 0`.
    """
    fast = list(weights)
    first_state = carry = None
    for step in range(steps):
        params = [fast[i] for i in adapted]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            predictions, new_state = model.stateless_call(fast, state, x, training=True)
            value, _ = loss_and_metric(loss, y, predictions)
        grads = tape.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if first_state is None:
            first_state = new_state
        if rate_kind == meta_lstm.KIND:
            if first_order:
                grads, value = [tf.stop_gradient(g) for g in grads], tf.stop_gradient(value)
            params, carry = meta_lstm.update(rates, params, grads, value, carry)
            for index, param in zip(adapted, params, strict=True):
                fast[index] = param
        else:
            for position, (index, grad) in enumerate(zip(adapted, grads, strict=True)):
                if first_order:
                    grad = tf.stop_gradient(grad)
                rate = inner_rate(rate_kind, rates, position, step)
                # A Python float goes straight to the gradient's dtype: casting
                # through float32 would round it before a float64 model sees it.
                rate = tf.constant(rate, grad.dtype) if isinstance(rate, float) else tf.cast(rate, grad.dtype)
                fast[index] = fast[index] - rate * grad
        if after_step is not None:
            after_step(step + 1, fast)
    return fast, first_state


def multi_step_weights(steps, iteration, anneal_iterations, dtype=tf.float32):
    """Importance of the query loss after each inner step (MAML++ multi-step loss).

    Starts uniform (`1/steps` each) and moves linearly, over
    `anneal_iterations` outer iterations, toward the last step, leaving every
    earlier step a floor of `0.03/steps` (the values of Antoniou et al., 2019).
    `anneal_iterations=None` keeps the weights uniform, so that the
    initialisation is trained to do well after every step count up to `steps`.
    The weights always sum to one. `iteration` may be a tensor.
    """
    if steps < 1:
        raise ArgumentError(f"Expected `steps` to be >= 1. Received: steps={steps}")
    if anneal_iterations is None:
        return tf.fill([steps], tf.constant(1.0 / steps, dtype))
    iteration = tf.cast(iteration, dtype)
    initial = 1.0 / steps
    decay = initial / max(anneal_iterations, 1)
    floor = 0.03 / steps
    earlier = tf.maximum(initial - iteration * decay, floor)
    last = tf.minimum(initial + iteration * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return tf.concat([tf.fill([steps - 1], earlier), tf.reshape(last, [1])], axis=0)
