"""Per-task adaptation of a transfer run: `prototypes`, a new linear `head`, or `finetune`.

The base is the run's backbone: the model's augmentation and its trained head
are left out, and the backbone's output embedding is L2-normalised. Every
method starts from the same N-way head, the class prototypes of that
normalised embedding (`prototype_head`): its logits rank the classes by the
euclidean distance between the normalised query and the mean of each class's
normalised support embeddings (the mean is not normalised again, so this is
euclidean, not cosine, nearest class mean). `prototypes` is that head, with no
gradient step (SimpleShot, Wang et al. 2019; Tian et al. 2020); steps 0 of
`head` (Chen et al. 2019's baseline, a new linear head on the frozen base)
and of `finetune` are `prototypes` exactly.

A step is one full-batch gradient step of the support set's mean
cross-entropy, with the settings' optimizer (`workbench.optimizers`, as
recipes' phases use it), fresh for every task. `head` trains only the head,
on embeddings computed once per image; `finetune` trains the head and the base
layers that the `unfreeze` selector picks (`workbench.models.freezing`). The
base runs in inference mode throughout: BatchNormalization keeps its moving
statistics, dropout and augmentation are off.

Variables are Keras variables reset before each task (Keras optimizers have
no functional update on the TensorFlow backend): `head` holds one head per
task of a chunk of tasks and trains them all at once (elementwise optimizers
make that exactly one independent training per task); `finetune` trains one
task at a time.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from workbench import runs
from workbench.adaptation.prototypes import prototype_head
from workbench.adaptation.scorer import TASKS_PER_CALL, EpisodeScorer, chunks
from workbench.adaptation.settings import FINETUNE, PROTOTYPES, AdaptSettings
from workbench.errors import RunError
from workbench.models import freezing
from workbench.models.bases import BACKBONE, load_model
from workbench.optimizers import make_optimizer

IMAGES_PER_CALL = 256  # images embedded per compiled call (padded), enough to keep both cores busy


class TransferBase:
    """A finished transfer run's backbone and its L2-normalised embedding."""

    def __init__(self, run: runs.Run):
        model = load_model(run.file(runs.MODEL_FILE))
        names = [layer.name for layer in model.layers]
        if BACKBONE not in names:
            raise RunError(
                f"{run.file(runs.MODEL_FILE)}: expected a transfer classifier with a nested model named {BACKBONE!r} "
                f"(augmentation -> backbone -> head); this model's layers are {', '.join(names)}"
            )
        self.backbone = model.get_layer(BACKBONE)
        if len(self.backbone.output_shape) != 2:
            raise RunError(
                f"{run.path}: the backbone's output has shape {self.backbone.output_shape}; expected one feature vector per image"
            )
        self.input_shape = tuple(int(d) for d in self.backbone.input_shape[1:])
        self.dim = int(self.backbone.output_shape[-1])
        self.normalize = keras.layers.UnitNormalization(axis=-1, name="normalize")
        self._embed = tf.function(self.features, input_signature=[tf.TensorSpec([IMAGES_PER_CALL, *self.input_shape], tf.float32)])

    def features(self, images):
        """The normalised embedding (float32) of a batch of raw images, the base in inference mode."""
        return tf.cast(self.normalize(self.backbone(images, training=False)), tf.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """`[..., D]` normalised embeddings of raw images `[..., H, W, C]` (any leading axes)."""
        images = np.asarray(images, np.float32)
        flat = images.reshape(-1, *self.input_shape)
        out = np.empty((len(flat), self.dim), np.float32)
        for start, index in chunks(len(flat), IMAGES_PER_CALL):
            batch = flat[index]
            if len(batch) < IMAGES_PER_CALL:  # fewer images than one call takes: pad to the compiled shape
                batch = np.concatenate([batch, np.repeat(batch[-1:], IMAGES_PER_CALL - len(batch), axis=0)])
            out[start : start + IMAGES_PER_CALL] = self._embed(batch).numpy()[: len(flat) - start]
        return out.reshape(*images.shape[: -len(self.input_shape)], self.dim)

    def parameters(self) -> int:
        return self.backbone.count_params()


def head_logits(features, kernel, bias):
    """Logits `[tasks, examples, N]` of one linear head per task."""
    return tf.einsum("tsd,tdn->tsn", features, kernel) + bias[:, None, :]


def task_losses(logits, labels):
    """Each task's mean cross-entropy `[tasks]`."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), axis=1)


def task_accuracies(logits, labels):
    """Each task's accuracy `[tasks]`."""
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
    return tf.reduce_mean(tf.cast(hits, tf.float32), axis=1)


def prototype_scores(support, support_y, query, query_y, ways: int):
    """The prototype head's support loss and query accuracy per task, from normalised features `[tasks, examples, D]`."""
    kernel, bias = prototype_head(support, support_y, ways)
    return task_losses(head_logits(support, kernel, bias), support_y), task_accuracies(head_logits(query, kernel, bias), query_y)


class TaskHeads:
    """Trains `tasks` N-way heads at once, each from its task's prototype head, optionally with base layers.

    Args:
        features: maps a task-first batch of inputs `[tasks, examples, ...]` to
            normalised features `[tasks, examples, D]`.
        base_variables: the base's variables trained with the heads (finetune;
            `tasks` must then be 1); reset to their run values before each call.
        tasks, dim, ways: the heads' shape.
        settings: the optimizer and its learning rate.
        example_shape: the shape of one input (an embedding or an image).
    """

    def __init__(self, features, base_variables, tasks: int, dim: int, ways: int, settings: AdaptSettings, example_shape: tuple):
        self._features, self.ways = features, ways
        self._base_variables = list(base_variables)
        self._base_values = [tf.constant(v.numpy()) for v in self._base_variables]
        self.kernel = keras.Variable(np.zeros((tasks, dim, ways), np.float32), name="task_kernel")
        self.bias = keras.Variable(np.zeros((tasks, ways), np.float32), name="task_bias")
        self.variables = [*self._base_variables, self.kernel, self.bias]
        self.optimizer = make_optimizer(settings.optimizer, settings.rate)
        self.optimizer.build(self.variables)
        self._optimizer_values = [tf.constant(v.numpy()) for v in self.optimizer.variables]
        x = tf.TensorSpec([tasks, None, *example_shape], tf.float32)
        y = tf.TensorSpec([tasks, None], tf.int32)
        self._train = tf.function(self._train_graph, input_signature=[x, y, x, y, tf.TensorSpec([None], tf.bool)])

    def train(self, support_x, support_y, query_x, query_y, steps: tuple[int, ...]):
        """Train `max(steps)` steps; returns `(support_loss, query_accuracy)`, each `[max(steps) + 1, tasks]`.

        Row `s` is after `s` steps; query accuracy is computed only at the
        listed steps (NaN elsewhere). The variables keep the last step's values.
        """
        wanted = np.zeros(max(steps) + 1, bool)
        wanted[list(steps)] = True
        losses, accuracies = self._train(support_x, support_y, query_x, query_y, wanted)
        return losses.numpy(), accuracies.numpy()

    def _logits(self, x):
        return head_logits(self._features(x), self.kernel, self.bias)

    def _train_graph(self, support_x, support_y, query_x, query_y, wanted):
        for variable, value in zip(self._base_variables, self._base_values, strict=True):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self._optimizer_values, strict=True):
            variable.assign(value)
        kernel, bias = prototype_head(self._features(support_x), support_y, self.ways)
        self.kernel.assign(kernel)
        self.bias.assign(bias)
        last = tf.shape(wanted)[0] - 1
        skipped = tf.fill([tf.shape(support_x)[0]], tf.constant(np.nan, tf.float32))

        def query_accuracy(step):
            return tf.cond(wanted[step], lambda: task_accuracies(self._logits(query_x), query_y), lambda: skipped)

        losses = tf.TensorArray(tf.float32, size=last + 1)
        accuracies = tf.TensorArray(tf.float32, size=last + 1)
        for step in tf.range(last):
            with tf.GradientTape() as tape:
                loss = task_losses(self._logits(support_x), support_y)
                # The sum of the tasks' mean losses: each head's gradient is that of its own task's loss.
                total = tf.reduce_sum(loss)
            losses = losses.write(step, loss)
            accuracies = accuracies.write(step, query_accuracy(step))
            self.optimizer.apply(tape.gradient(total, self.variables), self.variables)
        losses = losses.write(last, task_losses(self._logits(support_x), support_y))
        accuracies = accuracies.write(last, query_accuracy(last))
        return losses.stack(), accuracies.stack()


class TransferScorer(EpisodeScorer):
    """Scores a transfer run adapted per task by `settings.method`."""

    kind = "transfer"

    def __init__(self, run: runs.Run, settings: AdaptSettings):
        super().__init__()
        self.settings, self.method = settings, settings.method
        self.base = TransferBase(run)
        self.input_shape = self.base.input_shape
        self._heads: dict[tuple[int, int], TaskHeads] = {}
        self._trained = []
        if self.method == FINETUNE:
            backbone = self.base.backbone
            # BatchNorm stays frozen: in inference mode, its moving statistics never change.
            freezing.set_trainable(backbone, freezing.select(freezing.selectable_layers(backbone), settings.selector), "frozen")
            self._trained = list(backbone.trainable_variables)

    def parameters_for(self, ways: int | None) -> int:
        return self.base.parameters() + (0 if ways is None else (self.base.dim + 1) * ways)

    def score(self, episodes, steps):
        return self._curves(episodes, steps)[1]

    def support_loss(self, episodes, steps) -> dict[int, np.ndarray]:
        """Per step count, the support set's mean cross-entropy of every task after that many steps."""
        return self._curves(episodes, steps)[0]

    def _curves(self, episodes, steps):
        """`(support loss, query accuracy)`, each `{step: [tasks]}`."""
        steps, ways = self._check(episodes, steps)
        arrays = [np.asarray(episodes.support_x, np.float32), np.asarray(episodes.support_y, np.int32)]
        arrays += [np.asarray(episodes.query_x, np.float32), np.asarray(episodes.query_y, np.int32)]
        if self.method != FINETUNE:  # the base is frozen: embed every image once
            arrays[0], arrays[2] = self.base.embed(arrays[0]), self.base.embed(arrays[2])
        if self.method == PROTOTYPES:  # no step: the same figures at every count
            loss, accuracy = (value.numpy() for value in prototype_scores(*arrays, ways))
            return dict.fromkeys(steps, loss), dict.fromkeys(steps, accuracy)
        count = len(arrays[0])
        losses = np.empty((count, max(steps) + 1), np.float32)
        accuracies = np.empty_like(losses)
        for start, index in chunks(count, 1 if self.method == FINETUNE else TASKS_PER_CALL):
            loss, accuracy = self._task_heads(len(index), ways).train(*(a[index] for a in arrays), steps)
            losses[start : start + len(index)] = loss.T[: count - start]
            accuracies[start : start + len(index)] = accuracy.T[: count - start]
        return {step: losses[:, step] for step in steps}, {step: accuracies[:, step] for step in steps}

    def _task_heads(self, tasks: int, ways: int) -> TaskHeads:
        """The `TaskHeads` for calls of `tasks` tasks of `ways` ways, made on first use."""
        if (tasks, ways) not in self._heads:
            if self.method == FINETUNE:
                dim, shape = self.base.dim, self.input_shape

                def features(images):
                    return tf.reshape(self.base.features(tf.reshape(images, [-1, *shape])), [tasks, -1, dim])

                heads = TaskHeads(features, self._trained, tasks, dim, ways, self.settings, shape)
            else:
                heads = TaskHeads(tf.identity, [], tasks, self.base.dim, ways, self.settings, (self.base.dim,))
            self._heads[(tasks, ways)] = heads
        return self._heads[(tasks, ways)]

    def classifier(self, images: np.ndarray, labels: np.ndarray, steps: int) -> keras.Model:
        """An ordinary Keras classifier adapted to one support set: raw images -> base -> normalisation -> Dense softmax.

        Standard layers only: it reloads with `safe_mode=True` and nothing registered.
        """
        ways = int(labels.max()) + 1
        x, y = np.asarray(images, np.float32)[None], np.asarray(labels, np.int32)[None]
        if self.method == PROTOTYPES:
            kernel, bias = (value.numpy()[0] for value in prototype_head(tf.constant(self.base.embed(x)), y, ways))
        else:
            inputs = x if self.method == FINETUNE else self.base.embed(x)
            heads = self._task_heads(1, ways)
            heads.train(inputs, y, inputs, y, (steps,))  # finetune leaves the base's trained layers at their adapted values
            kernel, bias = heads.kernel.numpy()[0], heads.bias.numpy()[0]
        inputs = keras.Input(self.input_shape, name="image")
        output = keras.layers.Dense(ways, activation="softmax", name="head_output")
        model = keras.Model(inputs, output(self.base.normalize(self.base.backbone(inputs))), name="adapted_classifier")
        output.set_weights([kernel, bias])
        return model
