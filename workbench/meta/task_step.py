"""`TaskStep`: one task's part of a meta step, as a graph of tensors.

Adapt to the support set with fast weights, score the query set, and
differentiate the query loss with respect to the meta-parameters (or, for
Reptile, move toward the adapted weights). `MetaLearner` maps a `TaskStep`
over the tasks of a meta-batch; it holds no variables, only what shapes the
graph.
"""

import tensorflow as tf

from workbench.meta import adapt as inner


class TaskStep:
    """The per-task graphs of a learner's algorithm.

    Args:
        model: the Keras model the fast weights run through (`stateless_call`)
            where a pass is differentiated twice (second-order inner loops).
        first_order_model: the same network with the same weights order, for
            the passes differentiated at most once: the query set, first-order
            inner loops. Its BatchNorm may run a kernel that is fast to
            differentiate once only (`FusedBatchNormalization`).
        algorithm: "maml", "fomaml", "anil", "metasgd", "reptile" or "meta_lstm".
        loss: a key of `adapt.LOSSES`.
        inner_steps: inner gradient steps in meta-training.
        first_order: stop gradients through the inner loop.
        weight_count: how many of the meta-parameters are model weights; the
            rest are learned inner rates (or the meta-learner LSTM's weights).
        adapted: indices of the weights the inner loop adapts.
        rate_kind: one of `adapt.RATE_KINDS`.
        fixed_rate: the inner learning rate when `rate_kind` is "fixed".
        float_state: indices of the floating-point non-trainable variables
            (BatchNorm statistics) whose new values a task reports.
    """

    def __init__(
        self,
        model,
        first_order_model,
        *,
        algorithm,
        loss,
        inner_steps,
        first_order,
        weight_count,
        adapted,
        rate_kind,
        fixed_rate,
        float_state,
    ):
        self.model, self.first_order_model = model, first_order_model
        self.algorithm, self.loss = algorithm, loss
        self.inner_steps, self.first_order = inner_steps, first_order
        self.weight_count, self.adapted, self.float_state = weight_count, adapted, float_state
        self.rate_kind, self.fixed_rate = rate_kind, fixed_rate

    def inner_loop(self, meta_values, state, x, y, steps, first_order, after_step=None):
        """Fast weights after `steps` inner steps on `(x, y)`, and the state of the first forward pass."""
        rates = meta_values[self.weight_count :] if self.rate_kind != "fixed" else self.fixed_rate
        return inner.inner_loop(
            self.first_order_model if first_order else self.model,
            meta_values[: self.weight_count],
            state,
            x,
            y,
            loss=self.loss,
            steps=steps,
            adapted=self.adapted,
            rate_kind=self.rate_kind,
            rates=rates,
            first_order=first_order,
            after_step=after_step,
        )

    def query(self, weights, state, x, y):
        """`(loss, metric, new_state)` of `weights` on a query set (batch statistics, as in the MAML paper)."""
        predictions, new_state = self.first_order_model.stateless_call(weights, state, x, training=True)
        loss, metric = inner.loss_and_metric(self.loss, y, predictions)
        return loss, metric, new_state

    def curve(self, meta_values, state, task, steps):
        """Query metrics after each count of first-order inner steps in `steps` (0: the meta-parameters themselves)."""
        support_x, support_y, query_x, query_y = task
        metrics = []
        if 0 in steps:
            metrics.append(self.query(meta_values[: self.weight_count], state, query_x, query_y)[1])

        def after_step(step, fast):
            if step in steps:
                metrics.append(self.query(fast, state, query_x, query_y)[1])

        self.inner_loop(meta_values, state, support_x, support_y, max(steps), True, after_step)
        return tf.stack(metrics)

    def objective(self, meta_values, state, task, step_weights):
        """Query loss after adaptation, its metric, and the state of the first forward pass.

        With `step_weights` (MAML++ multi-step loss), the loss weighs the query
        loss after every inner step.
        """
        support_x, support_y, query_x, query_y = task
        step_results = []

        def after_step(step, fast):
            if step_weights is not None:
                step_results.append(self.query(fast, state, query_x, query_y))

        fast, first_state = self.inner_loop(meta_values, state, support_x, support_y, self.inner_steps, self.first_order, after_step)
        if step_weights is None:
            loss, metric, query_state = self.query(fast, state, query_x, query_y)
        else:
            losses = tf.stack([result[0] for result in step_results])
            loss = tf.reduce_sum(step_weights * losses)
            _, metric, query_state = step_results[-1]
        return loss, metric, query_state if first_state is None else first_state

    def gradient(self, meta_values, state, task, step_weights):
        """One task's `[loss, metric, *meta_gradients, *float_state]`."""
        if self.algorithm == "reptile":
            support_x, support_y, query_x, query_y = task
            x = tf.concat([support_x, query_x], axis=0)
            y = tf.concat([support_y, query_y], axis=0)
            fast, new_state = self.inner_loop(meta_values, state, x, y, self.inner_steps, True)
            # Reported: the adapted weights on the query part of their own training set.
            loss, metric, _ = self.query(fast, state, query_x, query_y)
            grads = [w - f for w, f in zip(meta_values, fast, strict=True)]
        else:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(meta_values)
                loss, metric, new_state = self.objective(meta_values, state, task, step_weights)
            grads = tape.gradient(loss, meta_values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [loss, metric, *grads, *(new_state[i] for i in self.float_state)]
