"""Any-way adaptation of a meta run: its own inner loop, on tasks with any number of classes.

A classification meta run is meta-trained for W-way tasks: its last Dense
layer, `head`, has W units. For N-way tasks with N != W, the head is rebuilt
with N units and set, per task, to the class prototypes of the features that
feed it (Proto-MAML, Triantafillou et al. 2020: kernel `2 c_k`, bias
`-||c_k||^2`, see `prototype_head`). Those features come from the
meta-learned weights with BatchNormalization on the support batch's
statistics, as the inner loop's first forward pass sees them. Then the run's
own inner loop adapts the model: its steps, its adapted variables (the head
alone for ANIL), its inner rates.

Learned rates of the head have the W-way head's shape. Meta-SGD's per-parameter
rates are averaged over the W classes, per input feature for the kernel, and
broadcast to N: the classes of a task are exchangeable, so no learned class
slot has a claim on any new class. MAML++'s per-step rates have no class axis
and are used as learned, as is the meta-learner LSTM, which works coordinate by
coordinate and so serves a head of any size.

For N == W the run's learned head is kept, so the scores are those of the
run's own meta-test protocol (`MetaLearner.evaluate`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from workbench import runs
from workbench.adaptation.prototypes import prototype_head
from workbench.adaptation.scorer import TASKS_PER_CALL, EpisodeScorer, chunks
from workbench.adaptation.settings import INNER_LOOP
from workbench.meta import meta_lstm
from workbench.meta.batchnorm import has_batchnorm, set_moving_statistics, with_standard_batchnorm
from workbench.meta.task_step import TaskStep
from workbench.models.builtin import HEAD_LAYER


def _values(variables):
    return [tf.convert_to_tensor(v.value) for v in variables]


class AnyWayLearner:
    """A meta run's learner with its head rebuilt for `ways`-way tasks, initialised per task from prototypes.

    The rebuilt model (`model`) shares every layer but the head with
    `learner.model`, so it always runs on the learner's current (meta-learned)
    weights. `rates` holds the inner rates of the adapted variables, in their
    order, when the run learned them (empty for a fixed rate).
    """

    def __init__(self, learner, ways: int):
        self.learner, self.ways = learner, ways
        meta_head = learner.model.get_layer(HEAD_LAYER)
        features = meta_head.input
        self.head = keras.layers.Dense(ways, name=HEAD_LAYER, dtype=meta_head.dtype_policy)
        self.model = keras.Model(learner.model.inputs, self.head(features), name=f"{learner.model.name}_{ways}_way")
        self.features = keras.Model(learner.model.inputs, features, name="head_features")
        weights = self.model.trainable_variables
        position = {id(v): i for i, v in enumerate(weights)}
        self._kernel, self._bias = position[id(self.head.kernel)], position[id(self.head.bias)]
        # ANIL adapts the head alone (the layer its learner adapts); the others adapt every weight.
        adapted = (self._kernel, self._bias) if learner.algorithm == "anil" else tuple(range(len(weights)))
        rate_kind, self.rates = self._inner_rates([weights[i] for i in adapted], meta_head)
        self._task = TaskStep(
            self.model,
            self.model,  # shares the learner's layers, so it has no fused twin
            algorithm=learner.algorithm,
            loss=learner.loss,
            inner_steps=learner.inner_steps,
            first_order=True,
            weight_count=len(weights),
            adapted=adapted,
            rate_kind=rate_kind,
            fixed_rate=learner.inner_learning_rate,
            float_state=(),
        )
        self._dtype = tf.as_dtype(self.model.outputs[0].dtype)
        self._evaluate_functions = {}

    def _inner_rates(self, adapted_variables, meta_head):
        """The rate kind and, for learned rates, one tensor per adapted variable of the rebuilt model."""
        learned = self.learner.inner_rates()
        if not learned:
            return "fixed", []
        if self.learner.algorithm == meta_lstm.KIND:
            return meta_lstm.KIND, [tf.constant(learned[key]) for key in meta_lstm.KEYS]
        kind = "per_parameter" if self.learner.algorithm == "metasgd" else "per_step"
        head_keys = {id(self.head.kernel): meta_head.kernel.path, id(self.head.bias): meta_head.bias.path}
        rates = []
        for variable in adapted_variables:
            rate = np.asarray(learned[head_keys.get(id(variable), variable.path)])
            if kind == "per_parameter" and id(variable) in head_keys:
                rate = np.broadcast_to(rate.mean(axis=-1, keepdims=True), tuple(variable.shape))
            rates.append(tf.constant(rate, dtype=variable.dtype))
        return kind, rates

    def _initial_weights(self, x, y):
        """The model's weights for one task: the meta-learned ones, the head set to the support set's prototypes."""
        features, _ = self.features.stateless_call(
            _values(self.features.trainable_variables), _values(self.features.non_trainable_variables), x, training=True
        )
        kernel, bias = prototype_head(features, y, self.ways)
        weights = _values(self.model.trainable_variables)
        weights[self._kernel] = tf.cast(kernel, weights[self._kernel].dtype)
        weights[self._bias] = tf.cast(bias, weights[self._bias].dtype)
        return weights

    def _curve_graph(self, steps, support_x, support_y, query_x, query_y):
        state = _values(self.model.non_trainable_variables)

        def curve(task):
            weights = self._initial_weights(task[0], task[1])
            return self._task.curve([*weights, *self.rates], state, task, steps)

        tasks = (support_x, support_y, query_x, query_y)
        return tf.map_fn(curve, tasks, fn_output_signature=tf.TensorSpec([len(steps)], self._dtype))

    def evaluate(self, episodes, steps: tuple[int, ...]) -> dict[int, np.ndarray]:
        """Per step count, the query accuracy of every task (as `MetaLearner.evaluate`)."""
        if steps not in self._evaluate_functions:
            self._evaluate_functions[steps] = tf.function(lambda *tasks: self._curve_graph(steps, *tasks))
        function = self._evaluate_functions[steps]
        arrays = [
            np.asarray(episodes.support_x, np.float32),
            np.asarray(episodes.support_y, np.int32),
            np.asarray(episodes.query_x, np.float32),
            np.asarray(episodes.query_y, np.int32),
        ]
        count = len(arrays[0])
        results = np.empty((count, len(steps)), np.float32)
        for start, index in chunks(count, TASKS_PER_CALL):
            results[start : start + len(index)] = function(*(a[index] for a in arrays)).numpy()[: count - start]
        return {step: results[:, i] for i, step in enumerate(steps)}

    def adapt(self, support_x, support_y, steps: int) -> keras.Model:
        """A new Keras model (standard layers, logits out) adapted to one support set, as `MetaLearner.adapt` makes one.

        Its BatchNormalization moving statistics are the support set's batch
        statistics under the adapted weights.
        """
        x = tf.constant(np.asarray(support_x, np.float32))
        y = tf.constant(np.asarray(support_y, np.int32))
        weights = self._initial_weights(x, y)
        state = _values(self.model.non_trainable_variables)
        fast, _ = self._task.inner_loop([*weights, *self.rates], state, x, y, steps, True)
        adapted = with_standard_batchnorm(self.model)
        for variable, value in zip(adapted.trainable_variables, fast, strict=True):
            variable.assign(value)
        if has_batchnorm(adapted):
            set_moving_statistics(adapted, x)
        return adapted


class MetaScorer(EpisodeScorer):
    """Scores a meta run adapted to each task by its own inner loop, to any number of ways."""

    kind = "meta"
    method = INNER_LOOP

    def __init__(self, run: runs.Run):
        from workbench.meta.runner import load_adaptation

        super().__init__()
        _, settings, self.learner = load_adaptation(run)
        self.ways = settings["ways"]
        self.regression = settings["ways"] is None
        self.input_shape = tuple(settings["input_shape"])
        self._any_way: dict[int, AnyWayLearner] = {}

    def parameters_for(self, ways: int | None) -> int:
        total = self.learner.model.count_params()
        if ways is None or self.regression or ways == self.ways:
            return total
        inputs = self.learner.model.get_layer(HEAD_LAYER).kernel.shape[0]
        return total + (inputs + 1) * (ways - self.ways)

    def any_way(self, ways: int) -> AnyWayLearner:
        """The learner for `ways`-way tasks (`ways` != the run's), made on first use."""
        if ways not in self._any_way:
            self._any_way[ways] = AnyWayLearner(self.learner, ways)
        return self._any_way[ways]

    def score(self, episodes, steps):
        steps, ways = self._check(episodes, steps)
        if self.regression or ways == self.ways:
            return self.learner.evaluate(episodes, steps=steps, batch_size=TASKS_PER_CALL)
        return self.any_way(ways).evaluate(episodes, steps)
