"""A transfer recipe's `domain_adaptation`: its target data, what the phases fit, and the figures it reports.

The target is split like the source data, with the recipe's seed. Its training
images are the unlabelled target examples that DANN pairs with source batches;
its test images, with their labels, only score: the target accuracy, and with
the source's test images, the proxy A-distance between the base's features of
the two domains, before training and after. `method: none` trains on the source
alone and reports the same figures: the baseline DANN is measured against.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np

from workbench.data.datasets import ImageSplits, load_image_splits
from workbench.domain.a_distance import proxy_a_distance
from workbench.domain.adversarial import DomainAdversarialTrainer, ReversalSchedule, features_model, paired_batches
from workbench.errors import DataError
from workbench.heads import scores

log = logging.getLogger(__name__)

__all__ = ["DomainTraining"]

A_DISTANCE_EXAMPLES = 1000  # held-out examples per domain the A-distance reads, at most


@dataclasses.dataclass
class DomainTraining:
    """The target domain of a run and how its phases train: `model` and `data` are what `fit_phase` gets."""

    settings: object  # the recipe's domain_adaptation section
    target: ImageSplits
    source_test: np.ndarray
    target_test: np.ndarray
    model: keras.Model
    data: ImageSplits
    a_distance_before: float

    @classmethod
    def prepare(cls, recipe, data: ImageSplits, classifier: keras.Model) -> DomainTraining:
        """Load the target, measure the A-distance of the untrained features, and wrap the classifier for DANN."""
        settings = recipe.domain_adaptation
        target = load_image_splits(settings.target, recipe.seed)
        if target.class_names != data.class_names:
            extra = sorted(set(target.class_names) ^ set(data.class_names))
            raise DataError(
                f"domain_adaptation.target: its classes must be the source data's, in the same order, so that its labels score the "
                f"classifier; {len(target.class_names)} against {len(data.class_names)}"
                + (f", e.g. {extra[0]!r} is in only one of them" if extra else "")
            )
        if data.test is None or target.test is None:
            raise DataError("domain_adaptation: the source data and the target both need a test split: set their test fractions above 0")
        source_test, target_test = _images(data.test), _images(target.test)
        before = _a_distance(classifier, source_test, target_test, recipe.seed)
        log.info("domain: %d target images to adapt to, proxy A-distance before training %.3f", target.counts["train"], before)
        model, fitted = classifier, data
        if settings.method == "dann":
            model = DomainAdversarialTrainer(classifier, settings.units)
            train = paired_batches(
                data.train, data.counts["train"], _images(target.train), recipe.data.batch_size, recipe.seed + 1, data.shuffle_epoch
            )
            fitted = dataclasses.replace(data, train=train)
        return cls(settings, target, source_test, target_test, model, fitted, before)

    def callbacks(self, recipe, index: int) -> list[keras.callbacks.Callback]:
        """The reversal-weight schedule of phase `index`, over the steps of every phase."""
        if not isinstance(self.model, DomainAdversarialTrainer):
            return []
        per_epoch = -(-self.data.counts["train"] // recipe.data.batch_size)
        epochs = [phase.epochs for phase in recipe.schedule]
        return [
            ReversalSchedule(self.model.reversal, self.settings.weight, per_epoch * sum(epochs[:index]), per_epoch, per_epoch * sum(epochs))
        ]

    def report(self, recipe, source_scores: dict) -> dict:
        """metrics.json's `domain`: source and target test figures and the A-distance before and after training."""
        classifier = self.model.classifier if isinstance(self.model, DomainAdversarialTrainer) else self.model
        return {
            "method": self.settings.method,
            "source": source_scores,
            "target": scores(self.model, self.target.test, recipe, self.target.counts["test"]),
            "a_distance": {
                "before": self.a_distance_before,
                "after": _a_distance(classifier, self.source_test, self.target_test, recipe.seed),
            },
        }


def _images(dataset) -> np.ndarray:
    """The images of a pipeline of (images, labels) batches, in its order."""
    return np.concatenate([images.numpy() for images, _ in dataset])


def _a_distance(classifier: keras.Model, source: np.ndarray, target: np.ndarray, seed: int) -> float:
    features = features_model(classifier)
    count = min(len(source), len(target), A_DISTANCE_EXAMPLES)
    source_features = features.predict(source[:count], verbose=0)
    target_features = features.predict(target[:count], verbose=0)
    return proxy_a_distance(source_features.reshape(count, -1), target_features.reshape(count, -1), seed)
