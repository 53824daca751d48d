"""`MetaLearner`: the outer loop of MAML, FOMAML, ANIL, Meta-SGD, Reptile and the meta-learner LSTM.

A learner owns a copy of a Keras model (with exact BatchNormalization, see
`workbench.meta.batchnorm`), the learned inner rates when the algorithm has
them (`workbench.meta.rates`, or the meta-learner LSTM of
`workbench.meta.meta_lstm`), and the outer optimizer. One meta-batch of
tasks is one `train_step`; `evaluate` scores adaptation on held-out tasks;
`adapt` and `export_model` give back ordinary Keras models for saving. What
runs for each task is a `workbench.meta.task_step.TaskStep`.

How tasks are mapped (measured on Keras 3.15 / TF 2.21, 2 shared CPU cores,
second-order MAML, one inner step): `tf.vectorized_map` batches dense nets
across tasks (sinusoid MLP 1-40-40-1, K=10, 25 tasks: about 490 iterations/s
against 240-300 for a loop), but cannot batch per-task convolution filters
and falls back to an internal loop (conv4, 5-way 1-shot, 32 tasks: 0.32
against 0.46 iterations/s for the loop, and twice the tracing time). The
`tf.while_loop` accumulates per-task meta-gradients, so one task's graph is
alive at a time. `strategy="auto"` takes the loop for models with a
convolution, vectorization otherwise.
"""

import keras
import numpy as np
import tensorflow as tf

from workbench.errors import ArgumentError
from workbench.meta import adapt as inner
from workbench.meta import meta_lstm
from workbench.meta.batchnorm import (
    has_batchnorm,
    set_moving_statistics,
    with_exact_batchnorm,
    with_fused_batchnorm,
    with_standard_batchnorm,
)
from workbench.meta.rates import InnerRates, load_rates, save_rates
from workbench.meta.task_step import TaskStep
from workbench.models.builtin import HEAD_LAYER
from workbench.models.layers import all_layers, is_convolutional

__all__ = ["ALGORITHMS", "STRATEGIES", "MetaLearner", "summarize"]

ALGORITHMS = ("maml", "fomaml", "anil", "metasgd", "reptile", "meta_lstm")
STRATEGIES = ("auto", "vectorized", "loop")


def summarize(values):
    """Returns `(mean, ci95)` of per-task values, `ci95 = 1.96 * std / sqrt(n)`.

    The evaluation protocol of the MAML papers (e.g. 600 tasks); `std` is the
    population standard deviation, as in their code.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ArgumentError("Expected at least one value to summarize. Received: values=[]")
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(values.size))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ArgumentError(f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ArgumentError(f"Expected `{name}` to be one of {list(choices)}. Received: {name}={value!r}")
    return value


def _check_no_float16(model):
    float16 = sorted({layer.name for layer in all_layers(model) if layer.compute_dtype == "float16"})
    if float16:
        raise ArgumentError(
            "The meta learner does no loss scaling, which layers computing in float16 need (small gradients underflow); "
            "build the model under the `mixed_bfloat16` or `float32` dtype policy. "
            f"Received: layers computing in float16: {float16[:5]}"
        )


def _values(variables):
    """Current values of variables as tensors (read inside the caller's graph)."""
    return [tf.convert_to_tensor(v.value) for v in variables]


class MetaLearner:
    """Meta-learns the initial weights of a Keras model over episodic tasks.

    Args:
        model: a built functional or sequential Keras model. The learner
            trains a copy (`learner.model`); save `learner.export_model()`.
        algorithm: one of "maml", "fomaml", "anil", "metasgd", "reptile",
            "meta_lstm". ANIL adapts only `head_layers` in the inner loop;
            Meta-SGD meta-learns one inner rate per parameter; Reptile takes
            plain SGD steps on support and query together and moves the
            weights toward the adapted ones (its meta-gradient is
            `theta - mean(phi)`); the meta-learner LSTM (Ravi & Larochelle)
            learns the update rule itself beside the initialisation, its input
            gate starting at `inner_learning_rate`.
        inner_steps: gradient steps of the inner loop during meta-training.
        inner_learning_rate: inner step size (the initial value when learned).
        first_order: stop gradients through the inner loop. Default: True for
            "fomaml" (where False is an error) and "meta_lstm" (the paper drops
            the second derivatives, the gradients and losses its LSTM reads),
            False for the others. Reptile is first-order by construction and
            ignores it.
        loss: "mse" (metric mse) or "sparse_categorical_crossentropy" (from
            logits, metric accuracy).
        head_layers: names of the layers ANIL adapts.
        optimizer: a fresh Keras optimizer, or its name; default Adam(1e-3).
            A `keras.optimizers.schedules` schedule as its learning rate (e.g.
            `CosineDecay`) anneals the meta learning rate.
        multi_step_loss: MAML++: the meta-loss weighs the query loss after
            every inner step (see `adapt.multi_step_weights`), annealed toward
            the last step over `multi_step_anneal` outer iterations, or
            uniform throughout when `multi_step_anneal` is None.
        learn_inner_rates: MAML++: learn one inner rate per adapted variable
            and inner step.
        first_order_iterations: MAML++ derivative-order annealing: the first
            this many outer iterations (counted by the optimizer) take
            first-order meta-gradients, the later ones second-order. A second
            compiled step serves the first-order iterations, so neither retraces.
        exact_batchnorm: train with `ExactBatchNormalization` (second-order
            meta-gradients through BatchNormalization are wrong without it).
        strategy: "vectorized" (`tf.vectorized_map` over tasks), "loop"
            (`tf.while_loop` accumulating per-task meta-gradients) or "auto".
        jit_compile: compile the meta step with XLA. Measured on CPU (benchmarks/RESULTS.md),
            XLA made conv nets many times slower and dense nets faster:
            recipes' `jit_compile: auto` chooses (`workbench.devices.use_xla`).

    Made inside a `tf.distribute` strategy's scope with several replicas, the
    learner splits each meta-batch over them (`replicas`).

    Mixed precision: a model whose layers compute in bfloat16 (Keras policy
    `mixed_bfloat16`) keeps float32 variables; fast weights, inner and
    meta-gradients stay float32 tensors, cast to bfloat16 where a layer reads
    them (Keras autocasts the values `stateless_call` is given). Layers computing
    in float16 are refused: the inner loop does no loss scaling.

    BatchNormalization uses batch statistics in the inner loop and on the
    query set, as in the MAML paper (transductive evaluation). Each
    `train_step` moves the moving statistics toward the support-set batch
    statistics of the meta-parameters, so that `export_model()` also works in
    inference mode.
    """

    def __init__(
        self,
        model,
        *,
        algorithm="maml",
        inner_steps=1,
        inner_learning_rate=0.01,
        first_order=None,
        loss="mse",
        head_layers=(HEAD_LAYER,),
        optimizer=None,
        multi_step_loss=False,
        multi_step_anneal=5000,
        learn_inner_rates=False,
        first_order_iterations=0,
        exact_batchnorm=True,
        strategy="auto",
        jit_compile=False,
    ):
        self.algorithm = _check_choice("algorithm", algorithm, ALGORITHMS)
        self.loss = _check_choice("loss", loss, inner.LOSSES)
        self.metric_name = inner.LOSSES[loss]
        self.strategy = _check_choice("strategy", strategy, STRATEGIES)
        self.inner_steps = _check_int("inner_steps", inner_steps, 0)
        self.multi_step_anneal = None if multi_step_anneal is None else _check_int("multi_step_anneal", multi_step_anneal, 1)
        if not isinstance(inner_learning_rate, (int, float)) or isinstance(inner_learning_rate, bool):
            raise ArgumentError(f"Expected `inner_learning_rate` to be a number. Received: inner_learning_rate={inner_learning_rate!r}")
        self.inner_learning_rate = float(inner_learning_rate)
        self.first_order = self._resolve_first_order(first_order)
        self.multi_step_loss = bool(multi_step_loss)
        self.learn_inner_rates = bool(learn_inner_rates)
        self.first_order_iterations = _check_int("first_order_iterations", first_order_iterations, 0)
        self._check_combinations()

        if not isinstance(model, keras.Model) or not model.built or not model.trainable_variables:
            raise ArgumentError(f"Expected a built Keras model with trainable variables. Received: model={model!r}")
        _check_no_float16(model)
        self.model = with_exact_batchnorm(model) if exact_batchnorm else with_standard_batchnorm(model)
        # The passes differentiated only once (query sets, first-order inner
        # loops) run a twin with fused BatchNorm: half the time of a step.
        self._first_order_model = with_fused_batchnorm(model) if has_batchnorm(model) else self.model
        self._weights = list(self.model.trainable_variables)
        self._adapted = self._adapted_indices(head_layers)
        self._float_state = [i for i, v in enumerate(self.model.non_trainable_variables) if tf.as_dtype(v.dtype).is_floating]
        self._input_dtype = tf.as_dtype(self.model.inputs[0].dtype)
        self._output_dtype = tf.as_dtype(self.model.outputs[0].dtype)
        if self.strategy == "auto":
            self.strategy = "loop" if is_convolutional(self.model) else "vectorized"

        self._rates = None
        if self.algorithm == "meta_lstm":
            self._rates = meta_lstm.MetaLSTMRule(self.inner_learning_rate, dtype=self._weights[0].dtype)
        elif self.algorithm == "metasgd" or self.learn_inner_rates:
            kind = "per_parameter" if self.algorithm == "metasgd" else "per_step"
            adapted = [self._weights[i] for i in self._adapted]
            self._rates = InnerRates(kind, adapted, self.inner_learning_rate, self.inner_steps)
        self._meta_variables = self._weights + (self._rates.variables if self._rates else [])
        self._task = self._task_step(self.first_order)
        self.optimizer = keras.optimizers.get(optimizer or keras.optimizers.Adam(1e-3))
        self.optimizer.build(self._meta_variables)

        # One compiled function per configuration; shapes are fixed by the
        # first call, so each traces once (see `train_step_tracing_count`).
        # Derivative-order annealing adds the first-order configuration.
        self.jit_compile = bool(jit_compile)
        self._distribution = tf.distribute.get_strategy()
        self._steps = {self.first_order: self._compiled_step(self._task)}
        if self.first_order_iterations:
            self._steps[True] = self._compiled_step(self._task_step(True))
        self._evaluate_functions = {}
        self._adapt_functions = {}

    def _resolve_first_order(self, first_order):
        if first_order is not None and not isinstance(first_order, bool):
            raise ArgumentError(f"Expected `first_order` to be a bool or None. Received: first_order={first_order!r}")
        if self.algorithm == "fomaml" and first_order is False:
            raise ArgumentError(
                "Algorithm 'fomaml' is first-order by definition; use algorithm='maml' for second-order "
                "meta-gradients. Received: first_order=False"
            )
        if first_order is None and self.algorithm == "meta_lstm":
            return True
        return self.algorithm in ("fomaml", "reptile") or bool(first_order)

    def _task_step(self, first_order):
        return TaskStep(
            self.model,
            self._first_order_model,
            algorithm=self.algorithm,
            loss=self.loss,
            inner_steps=self.inner_steps,
            first_order=first_order,
            weight_count=len(self._weights),
            adapted=self._adapted,
            rate_kind=self._rates.kind if self._rates else "fixed",
            fixed_rate=self.inner_learning_rate,
            float_state=self._float_state,
        )

    def _compiled_step(self, task):
        """`(gradient, train)`: the traced meta-gradient and outer update of `task`'s configuration."""

        def gradient(*tasks):
            return self._meta_gradient_graph(task, *tasks)

        gradient_function = tf.function(gradient, jit_compile=self.jit_compile)
        if self.replicas > 1:
            # XLA compiles each replica's share; `strategy.run` itself cannot be compiled.
            return gradient_function, tf.function(lambda *tasks: self._replicated_train_graph(gradient_function, *tasks))
        return gradient_function, tf.function(lambda *tasks: self._train_graph(task, *tasks), jit_compile=self.jit_compile)

    def _current_step(self):
        """The compiled step of the next outer iteration: first order during `first_order_iterations`."""
        first_order = self.first_order or int(self.optimizer.iterations.numpy()) < self.first_order_iterations
        return self._steps[first_order]

    def _check_combinations(self):
        if self.first_order_iterations and self.first_order:
            raise ArgumentError(
                "`first_order_iterations` anneals first-order meta-gradients into second-order ones; this learner is "
                f"first-order throughout (algorithm={self.algorithm!r}, first_order=True). "
                f"Received: first_order_iterations={self.first_order_iterations}"
            )
        maml_plus_plus = [name for name in ("multi_step_loss", "learn_inner_rates") if getattr(self, name)]
        if self.algorithm in ("reptile", "meta_lstm") and maml_plus_plus:
            name = maml_plus_plus[0]
            raise ArgumentError(f"`{name}` is a MAML++ option and does not apply to {self.algorithm}. Received: {name}=True")
        if self.algorithm == "metasgd" and self.learn_inner_rates:
            raise ArgumentError(
                "Meta-SGD already learns one inner rate per parameter; `learn_inner_rates` (one rate per "
                "variable and step) is the MAML++ alternative. Received: algorithm='metasgd', learn_inner_rates=True"
            )
        if self.inner_steps < 1 and (self.algorithm in ("reptile", "meta_lstm") or maml_plus_plus):
            names = {"reptile": "Reptile", "meta_lstm": "The meta-learner LSTM"}
            needs = names[self.algorithm] if self.algorithm in names else f"`{maml_plus_plus[0]}`"
            raise ArgumentError(f"{needs} needs at least one inner step. Received: inner_steps={self.inner_steps}")

    def _adapted_indices(self, head_layers):
        if self.algorithm != "anil":
            return tuple(range(len(self._weights)))
        head_layers = [head_layers] if isinstance(head_layers, str) else list(head_layers)
        layers = {layer.name: layer for layer in all_layers(self.model)}
        missing = [name for name in head_layers if name not in layers]
        if missing or not head_layers:
            raise ArgumentError(
                f"ANIL adapts the layers named in `head_layers`, but the model has no layer named {missing}. "
                f"Layers: {sorted(layers)}. Received: head_layers={head_layers}"
            )
        head = {id(v) for name in head_layers for v in layers[name].trainable_variables}
        adapted = tuple(i for i, v in enumerate(self._weights) if id(v) in head)
        if not adapted:
            raise ArgumentError(f"ANIL found no trainable variables in the head layers. Received: head_layers={head_layers}")
        return adapted

    @property
    def meta_variables(self):
        """What the outer optimizer updates: the model's trainable variables, then learned inner rates."""
        return list(self._meta_variables)

    @property
    def replicas(self):
        """How many replicas share each meta-batch: those of the `tf.distribute` strategy the learner was made in."""
        return self._distribution.num_replicas_in_sync

    @property
    def train_step_tracing_count(self):
        """How many times `train_step` has been traced (1 after warm-up; 2 once derivative-order annealing has switched)."""
        return sum(train.experimental_get_tracing_count() for _, train in self._steps.values())

    # -------------------------------------------------------------- over tasks

    def _mean_over_tasks(self, fn, tasks, templates):
        """Mean over tasks of `fn(task)`, a list of tensors shaped like `templates`."""
        if self.strategy == "vectorized":
            return [tf.reduce_mean(output, axis=0) for output in tf.vectorized_map(fn, tasks)]
        count = tf.shape(tasks[0])[0]

        def body(i, totals):
            outputs = fn([t[i] for t in tasks])
            return i + 1, [total + output for total, output in zip(totals, outputs, strict=True)]

        initial = [tf.zeros(t.shape, t.dtype) for t in templates]
        _, totals = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), initial))
        return [total / tf.cast(count, total.dtype) for total in totals]

    def _meta_gradient_graph(self, task_step, support_x, support_y, query_x, query_y):
        meta_values = _values(self._meta_variables)
        state = _values(self.model.non_trainable_variables)
        step_weights = None
        if self.multi_step_loss:
            step_weights = inner.multi_step_weights(
                self.inner_steps, self.optimizer.iterations, self.multi_step_anneal, dtype=self._output_dtype
            )
        scalar = tf.zeros([], self._output_dtype)
        templates = [scalar, scalar, *meta_values, *(state[i] for i in self._float_state)]
        means = self._mean_over_tasks(
            lambda task: task_step.gradient(meta_values, state, task, step_weights),
            [support_x, support_y, query_x, query_y],
            templates,
        )
        count = len(meta_values)
        return means[0], means[1], means[2 : 2 + count], means[2 + count :]

    def _train_graph(self, task_step, support_x, support_y, query_x, query_y):
        loss, metric, grads, new_state = self._meta_gradient_graph(task_step, support_x, support_y, query_x, query_y)
        self.optimizer.apply(grads, self._meta_variables)
        self._set_state(new_state)
        return {"loss": loss, "metric": metric}

    def _replicated_train_graph(self, gradient_function, *tasks):
        """`_train_graph` with the meta-batch split over the strategy's replicas.

        Each replica takes its consecutive share of the tasks, computes their
        mean meta-gradient and hands it, divided by the number of replicas, to
        the optimizer, which sums the replicas' gradients (an all-reduce, across
        workers too) into the meta-batch mean before its one update of the
        mirrored variables. Every worker holds the whole meta-batch, sampled
        from the same seed.
        """

        def replica_step(*tasks):
            share = tasks[0].shape[0] // self.replicas
            start = tf.distribute.get_replica_context().replica_id_in_sync_group * share
            loss, metric, grads, new_state = gradient_function(*(t[start : start + share] for t in tasks))
            self.optimizer.apply([g / self.replicas for g in grads], self._meta_variables)
            return loss, metric, new_state

        outputs = self._distribution.run(replica_step, args=tasks)
        mean = tf.distribute.ReduceOp.MEAN
        loss, metric, new_state = tf.nest.map_structure(lambda value: self._distribution.reduce(mean, value, axis=None), outputs)
        self._set_state(new_state)
        return {"loss": loss, "metric": metric}

    def _set_state(self, new_state):
        # The mean over tasks of one momentum update each is one momentum
        # update with the mean of the tasks' batch statistics.
        variables = self.model.non_trainable_variables
        for index, value in zip(self._float_state, new_state, strict=True):
            variables[index].assign(value)

    def _curve_graph(self, steps, support_x, support_y, query_x, query_y):
        """Per-task query metrics `[tasks, len(steps)]` after each count of inner steps in `steps`."""
        meta_values = _values(self._meta_variables)
        state = _values(self.model.non_trainable_variables)

        def curve(task):
            return self._task.curve(meta_values, state, task, steps)

        tasks = (support_x, support_y, query_x, query_y)
        if self.strategy == "vectorized":
            return tf.vectorized_map(curve, tasks)
        return tf.map_fn(curve, tasks, fn_output_signature=tf.TensorSpec([len(steps)], self._output_dtype))

    # ------------------------------------------------------------------ inputs

    def _cast_x(self, x, name, task_axis=True):
        x = tf.convert_to_tensor(x)
        expected = len(self.model.inputs[0].shape) + int(task_axis)
        if len(x.shape) != expected:
            axes = ("tasks, " if task_axis else "") + ", ".join(["examples", *(str(d) for d in self.model.inputs[0].shape[1:])])
            raise ArgumentError(f"Expected `{name}` with {expected} axes ({axes}). Received: {name}.shape={tuple(x.shape)}")
        return tf.cast(x, self._input_dtype)

    def _cast_y(self, y):
        return tf.cast(tf.convert_to_tensor(y), self._output_dtype if self.loss == "mse" else tf.int32)

    def _tensors(self, episodes):
        return (
            self._cast_x(episodes.support_x, "support_x"),
            self._cast_y(episodes.support_y),
            self._cast_x(episodes.query_x, "query_x"),
            self._cast_y(episodes.query_y),
        )

    # -------------------------------------------------------------- public API

    def train_step(self, episodes):
        """One outer update from a meta-batch of `Episodes`; returns `{"loss", "metric"}` floats.

        `loss` is the meta-loss (mean query loss after adaptation) and
        `metric` the matching mean mse or accuracy, both before the update.
        Keep the meta-batch shapes fixed: new shapes trace a new graph.
        Under a strategy with several replicas, the meta-batch size must be a
        multiple of `replicas`.
        """
        tasks = self._tensors(episodes)
        if tasks[0].shape[0] % self.replicas:
            raise ArgumentError(
                f"Expected a meta-batch that splits evenly over {self.replicas} replicas. Received: {tasks[0].shape[0]} tasks"
            )
        logs = self._current_step()[1](*tasks)
        return {name: float(value) for name, value in logs.items()}

    def meta_gradient(self, episodes):
        """The meta-loss, metric and meta-gradient of a meta-batch, without updating anything.

        Returns `{"loss": float, "metric": float, "gradients": [np.ndarray]}`,
        the gradients aligned with `meta_variables`; first-order while
        derivative-order annealing would make the next `train_step` so.
        """
        loss, metric, grads, _ = self._current_step()[0](*self._tensors(episodes))
        return {"loss": float(loss), "metric": float(metric), "gradients": [g.numpy() for g in grads]}

    def evaluate(self, episodes, steps=(1, 5, 10), batch_size=50):
        """Adapts to each task's support set and scores its query set; no outer update.

        Args:
            episodes: `Episodes` of the evaluation tasks (e.g. 600).
            steps: an int or a list of inner-step counts to report (0 scores
                the meta-parameters themselves). Learned per-step rates are
                reused from the last learned step beyond `inner_steps`.
            batch_size: tasks per compiled call; the last chunk is padded so
                that every call has the same shapes.

        Returns:
            `{steps: np.ndarray}` of per-task metrics (mse or accuracy); pass
            each to `summarize` for the mean and 95% interval.
        """
        if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
            steps = [steps]
        steps = tuple(sorted({_check_int("steps", s, 0) for s in steps}))
        if not steps:
            raise ArgumentError("Expected at least one step count. Received: steps=[]")
        batch_size = _check_int("batch_size", batch_size, 1)
        if steps not in self._evaluate_functions:
            self._evaluate_functions[steps] = tf.function(lambda *tasks: self._curve_graph(steps, *tasks))
        function = self._evaluate_functions[steps]
        arrays = [np.asarray(t) for t in self._tensors(episodes)]
        count = arrays[0].shape[0]
        chunk = min(batch_size, count)
        results = []
        for start in range(0, count, chunk):
            index = np.minimum(np.arange(start, start + chunk), count - 1)
            results.append(function(*(a[index] for a in arrays)).numpy()[: count - start])
        results = np.concatenate(results, axis=0)
        return {step: results[:, i] for i, step in enumerate(steps)}

    def adapted_weights(self, support_x, support_y, steps=None):
        """Fast weights after adapting to one task, aligned with `model.trainable_variables`.

        `support_x` and `support_y` hold one task's support set (no task
        axis); `steps` defaults to `inner_steps`.
        """
        steps = self.inner_steps if steps is None else _check_int("steps", steps, 0)
        if steps not in self._adapt_functions:

            def adapt_graph(x, y):
                state = _values(self.model.non_trainable_variables)
                return self._task.inner_loop(_values(self._meta_variables), state, x, y, steps, True)[0]

            self._adapt_functions[steps] = tf.function(adapt_graph)
        x = self._cast_x(support_x, "support_x", task_axis=False)
        return [w.numpy() for w in self._adapt_functions[steps](x, self._cast_y(support_y))]

    def adapt(self, support_x, support_y, steps=None):
        """Returns a new Keras model (standard layers only) adapted to one task.

        Its weights are the fast weights of `adapted_weights`. Its
        BatchNormalization moving statistics are the batch statistics of the
        support set under those weights, so that in inference mode it gives
        on the support set exactly what the inner loop saw.
        """
        fast = self.adapted_weights(support_x, support_y, steps)
        adapted = with_standard_batchnorm(self.model)
        for variable, value in zip(adapted.trainable_variables, fast, strict=True):
            variable.assign(value)
        if has_batchnorm(adapted):
            set_moving_statistics(adapted, self._cast_x(support_x, "support_x", task_axis=False))
        return adapted

    def export_model(self):
        """The meta-learned model as a new Keras model with standard layers only (for saving)."""
        return with_standard_batchnorm(self.model)

    # ----------------------------------------------------------- learned rates

    def inner_rates(self):
        """Learned inner rates as `{variable path: np.ndarray}` (the meta-learner LSTM's weights for "meta_lstm"); empty when none are learned.

        With the exported model and the `inner` settings (steps, learning
        rate, algorithm), this is all that adaptation needs to be reproduced.
        """
        return self._rates.as_dict() if self._rates else {}

    def set_inner_rates(self, rates):
        """Restores rates from `inner_rates()`; keys and shapes must match."""
        if self._rates is None:
            if rates:
                raise ArgumentError(f"Expected inner rates for exactly []; this learner learns none. Received: keys={sorted(rates)}")
            return
        self._rates.restore(rates)

    def save_inner_rates(self, path):
        """Writes `inner_rates()` to an `.npz` file (a run keeps them beside its model)."""
        save_rates(self.inner_rates(), path)

    def load_inner_rates(self, path):
        """Restores inner rates written by `save_inner_rates`."""
        self.set_inner_rates(load_rates(path))
