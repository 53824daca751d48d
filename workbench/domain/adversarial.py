"""Domain-adversarial training (DANN): a classifier trained on labelled source images whose features learn to hide the domain.

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015.
Each training batch pairs a labelled source batch with an unlabelled target
batch of the same size. Both pass through the classifier's network together; the
class loss reads the source half, and a domain classifier, behind a
gradient-reversal layer, learns to tell the halves apart from the base's
features. The reversal turns its gradient into one that makes the features
harder to tell apart, while the domain classifier itself still learns.

`DomainAdversarialTrainer` is what a phase fits, compiles and checkpoints;
the model a run saves is its `classifier`, unchanged in form. Scoring (`evaluate`,
the validation split) is the classifier's, on labelled batches as usual.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from workbench.domain.schedule import reversal_weight
from workbench.models.bases import BACKBONE
from workbench.models.gradient_reversal import GradientReversal
from workbench.precision import output_dtype

__all__ = ["DomainAdversarialTrainer", "ReversalSchedule", "features_model", "paired_batches"]


def features_model(classifier: keras.Model) -> keras.Model:
    """Images -> the base's features, sharing the classifier's layers (augmentation included, active only in training)."""
    return keras.Model(classifier.inputs, _backbone_output(classifier), name="features")


def _backbone_output(classifier: keras.Model):
    """The backbone's output tensor in the classifier's graph.

    A nested model's `.output` is the output of its own graph, not of the call in
    the classifier's: that is the output of its (one) inbound node.
    """
    return classifier.get_layer(BACKBONE)._inbound_nodes[-1].output_tensors[0]


class DomainAdversarialTrainer(keras.Model):
    """Fits `classifier` on ((source images, labels), target images) batches with a reversed domain loss.

    Args:
        classifier: the transfer classifier, images -> class probabilities.
        units: the hidden layers of the domain classifier (ReLU), before its one logit.
    """

    def __init__(self, classifier: keras.Model, units: list[int], **kwargs):
        super().__init__(name="domain_adversarial", **kwargs)
        self.classifier = classifier
        backbone_output = _backbone_output(classifier)
        self.network = keras.Model(classifier.inputs, [backbone_output, classifier.outputs[0]], name="features_and_classes")
        self.reversal = GradientReversal(0.0, name="gradient_reversal")
        self.domain_classifier = keras.Sequential(
            [keras.layers.Dense(size, activation="relu", name=f"domain_dense_{index}") for index, size in enumerate(units)]
            + [keras.layers.Dense(1, dtype=output_dtype(), name="domain_logit")],  # float32 logits under a mixed policy
            name="domain_classifier",
        )
        self.domain_classifier.build((None, backbone_output.shape[-1]))
        self.domain_loss = keras.metrics.Mean(name="domain_loss")
        self.domain_accuracy = keras.metrics.BinaryAccuracy(name="domain_accuracy", threshold=0.0)  # on logits
        self.built = True  # every layer it holds is built

    def call(self, images, training=False):
        return self.classifier(images, training=training)

    def train_step(self, data):
        (source, labels), target = data
        count = tf.shape(source)[0]
        domains = tf.concat([tf.zeros([count, 1]), tf.ones([tf.shape(target)[0], 1])], axis=0)
        with tf.GradientTape() as tape:
            features, probabilities = self.network(tf.concat([source, target], axis=0), training=True)
            predictions = probabilities[:count]
            class_loss = self.compute_loss(y=labels, y_pred=predictions, training=True)
            logits = self.domain_classifier(self.reversal(features), training=True)
            domain_loss = tf.reduce_mean(keras.losses.binary_crossentropy(domains, logits, from_logits=True))
            total = self.optimizer.scale_loss(class_loss + domain_loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(total, variables), variables)
        # As Keras's own train_step logs it: the class loss, unscaled from its share of the replicas.
        self._loss_tracker.update_state(class_loss * tf.distribute.get_strategy().num_replicas_in_sync, sample_weight=count)
        self.domain_loss.update_state(domain_loss)
        self.domain_accuracy.update_state(domains, logits)
        return {
            **self.compute_metrics(source, labels, predictions),
            "domain_loss": self.domain_loss.result(),
            "domain_accuracy": self.domain_accuracy.result(),
        }

    def test_step(self, data):
        """The classifier's figures on labelled batches; the domain ones exist only in training."""
        return {name: value for name, value in super().test_step(data).items() if not name.startswith("domain_")}


class ReversalSchedule(keras.callbacks.Callback):
    """Sets the reversal weight before every batch: `weight` times 2/(1+exp(-10 p)) - 1, p the progress over all adversarial steps.

    Progress counts from `steps_before` (the adversarial steps of earlier phases),
    so that a phase, or a run resumed inside one, continues the schedule where it stood.
    """

    def __init__(self, layer: GradientReversal, weight: float, steps_before: int, steps_per_epoch: int, total_steps: int):
        super().__init__()
        self.layer, self.weight = layer, weight
        self.steps_before, self.steps_per_epoch, self.total_steps = steps_before, steps_per_epoch, max(total_steps, 1)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step = self.steps_before + self.epoch * self.steps_per_epoch + batch
        self.layer.weight.assign(self.weight * reversal_weight(min(step / self.total_steps, 1.0)))


def paired_batches(source, source_count: int, target_images, batch_size: int, seed: int, epoch):
    """Each batch of `source` (a pipeline of (images, labels) over `source_count` examples) with a batch of as many target images.

    The target images come in an order fixed by (seed, the value of the shuffle
    variable `epoch`), repeated as often as the source needs, so that a resumed
    run pairs the same batches as an uninterrupted one.
    """
    images = tf.constant(target_images)
    count = len(target_images)
    repeats = -(-source_count // count)

    def order(_):
        shuffled = tf.random.experimental.stateless_shuffle(
            tf.range(repeats * count, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch.read_value()])
        )
        return tf.math.floormod(shuffled, count)

    target = tf.data.Dataset.from_tensors(0).map(order).unbatch().batch(batch_size)
    target = target.map(lambda index: tf.cast(tf.gather(images, index), tf.float32))
    return tf.data.Dataset.zip((source, target)).prefetch(tf.data.AUTOTUNE)
