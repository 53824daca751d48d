"""`workbench adapt`: a finished run adapted to a labelled support folder, saved as an ordinary Keras classifier.

The classifier takes raw images and outputs class probabilities; its class
names go beside it in `<output>.classes.json`, for `workbench predict`. A meta
run adapts with its own inner loop to any number of classes; a transfer run
by `prototypes` (the default), `head` or `finetune`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workbench import runs
from workbench.adaptation.scorer import finished_run
from workbench.adaptation.settings import DEFAULT_STEPS, INNER_LOOP, PROTOTYPES, AdaptSettings
from workbench.errors import ArgumentError, DataError


def adapt_run(
    run_path,
    support_path,
    output: Path,
    *,
    method: str | None = None,
    steps: int | None = None,
    learning_rate: float | None = None,
    unfreeze=None,
) -> dict:
    """Adapt the finished run at `run_path` to the class folders of `support_path`; save the classifier at `output`.

    `steps` defaults to the most the recipe evaluates (meta runs) or
    `DEFAULT_STEPS` (head, finetune); `prototypes` takes none. Returns the
    classes, the number of support images, the method, the steps and the output.
    """
    run = finished_run(run_path)
    if run.manifest["kind"] == "meta":
        if method not in (None, INNER_LOOP) or learning_rate is not None or unfreeze is not None:
            raise ArgumentError(
                f"{run.path}: a meta run adapts with its own inner loop (its steps and rates); "
                "a method, learning rate and unfreeze selector are for transfer runs"
            )
        classifier, loaded, steps = _adapt_meta(run, support_path, steps)
        method = INNER_LOOP
    else:
        settings = AdaptSettings(method or PROTOTYPES, learning_rate, unfreeze)
        if settings.method == PROTOTYPES and steps is not None:
            raise ArgumentError(f"prototypes takes no gradient step; --steps is for the head and finetune methods. Received: steps={steps}")
        classifier, loaded, steps = _adapt_transfer(run, support_path, settings, steps)
        method = settings.method
    runs.save_model(classifier, output)
    runs.atomic_write_text(output.with_suffix(".classes.json"), json.dumps(list(loaded.class_names)))
    return {"classes": list(loaded.class_names), "support": len(loaded.labels), "method": method, "steps": steps, "output": str(output)}


def _support(path, input_shape):
    from workbench.data.images import ImageFolder

    return ImageFolder.open(path).load(image_size=tuple(input_shape[:2]), channels=input_shape[2])


def _adapt_meta(run: runs.Run, support_path, steps: int | None):
    import keras

    from workbench.adaptation.any_way import AnyWayLearner
    from workbench.meta.runner import load_adaptation

    recipe, settings, learner = load_adaptation(run)
    if settings["ways"] is None:
        raise DataError(f"{run.path}: adapt takes a class-per-folder support set; this run learned {recipe.tasks.source} regression")
    loaded = _support(support_path, settings["input_shape"])
    steps = steps or max(recipe.evaluation.steps)
    images, labels = loaded.images.astype("float32"), np.asarray(loaded.labels)
    if len(loaded.class_names) == settings["ways"]:
        adapted = learner.adapt(images, labels, steps=steps)
    else:
        adapted = AnyWayLearner(learner, len(loaded.class_names)).adapt(images, labels, steps)
    probabilities = keras.layers.Softmax(name="probabilities")(adapted.outputs[0])
    return keras.Model(adapted.inputs, probabilities, name="adapted_classifier"), loaded, steps


def _adapt_transfer(run: runs.Run, support_path, settings: AdaptSettings, steps: int | None):
    from workbench.adaptation.transfer_methods import TransferScorer

    scorer = TransferScorer(run, settings)
    loaded = _support(support_path, scorer.input_shape)
    steps = 0 if settings.method == PROTOTYPES else steps or DEFAULT_STEPS
    return scorer.classifier(loaded.images.astype("float32"), np.asarray(loaded.labels), steps), loaded, steps
