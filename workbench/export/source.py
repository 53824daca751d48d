"""What an export starts from: the classifier, its class names, the held-out images to prove it on, calibration images.

A run directory (or the `model.keras` in one) brings its own held-out images,
the recipe's test split, and its training images for int8 calibration. A bare
`.keras` classifier (what `workbench adapt` writes) brings neither: `--data`
names a folder of class folders for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench import runs
from workbench.errors import ArgumentError, ModelError, RunError

CALIBRATION_IMAGES = 300  # int8 ranges from a few hundred training images


@dataclass
class Subject:
    model: object  # the Keras classifier with probabilities out: what the export is compared with
    exported: object  # the same, less its augmentation layers: what is exported
    class_names: list[str]
    images: np.ndarray  # float32 raw images, as the model takes them
    labels: np.ndarray
    data: str  # where the images came from
    softmax_appended: bool
    left_out: list[str]  # augmentation layers, which act only in training
    calibration: np.ndarray | None = None
    calibration_data: str | None = None


def load_subject(path: Path, data: Path | None, calibrate: bool) -> Subject:
    """The classifier at `path` and the images to check its export on (and calibrate with, when `calibrate`)."""
    from workbench.evaluation import Classifier, _folder_examples, _recipe_examples

    path = Path(path)
    run = _finished_run(path)
    classifier = Classifier.load(path)
    if classifier.model.inputs[0].dtype != "float32":
        raise ModelError(f"{path}: takes {classifier.model.inputs[0].dtype} inputs; exports take float32 images")
    if data is not None:
        images, labels = _folder_examples(Path(data), classifier)
        source = str(data)
    elif run is not None:
        images, labels, split = _recipe_examples(run.load_recipe())
        source = f"the run's {split} split"
    else:
        raise ArgumentError(
            f"{path}: a bare model carries no held-out images; pass --data FOLDER (one folder of images per class) to check the export on"
        )
    model, exported, appended, left_out = for_export(classifier.model)
    subject = Subject(
        model, exported, classifier.class_names, np.asarray(images, "float32"), np.asarray(labels), source, appended, left_out
    )
    if calibrate:
        if run is not None and data is None:
            subject.calibration, subject.calibration_data = _training_images(run), "the run's training split"
        else:
            subject.calibration, subject.calibration_data = (
                subject.images[:CALIBRATION_IMAGES],
                f"{data} (no training images beside a bare model)",
            )
    return subject


def _finished_run(path: Path) -> runs.Run | None:
    """The run `path` belongs to, refused unless it finished; None for a bare model file."""
    if path.is_dir():
        run = runs.Run.open(path)
    elif path.name == runs.MODEL_FILE and (path.parent / runs.MANIFEST_FILE).is_file():
        run = runs.Run(path.parent)
    else:
        return None
    status = run.manifest.get("status")
    if status != "finished":
        raise RunError(f"{run.path}: the run is {status}, not finished; export a finished run (`workbench resume {run.path}` continues it)")
    return run


def _training_images(run: runs.Run) -> np.ndarray:
    from workbench.data.datasets import load_image_splits

    recipe = run.load_recipe()
    batches, count = [], 0
    for images, _ in load_image_splits(recipe.data, recipe.seed).train:
        batches.append(images.numpy())
        count += len(batches[-1])
        if count >= CALIBRATION_IMAGES:
            break
    return np.concatenate(batches)[:CALIBRATION_IMAGES].astype("float32")


def for_export(model):
    """The model to compare with, the model to export, whether a softmax was appended, and the layers left out.

    A model with logits out gets a softmax, so that every export outputs
    probabilities. Augmentation layers go from the exported model: they act only
    in training, but their random ops stay in the traced graph, and neither ONNX
    nor LiteRT has them. Parity is measured against the model with them.
    """
    import keras

    appended = not _ends_in_softmax(model)
    if appended:
        probabilities = keras.layers.Softmax(name="probabilities")(model.outputs[0])
        model = keras.Model(model.inputs, probabilities, name=f"{model.name}_probabilities")
    left_out = [layer.name for layer in model.layers if _acts_only_in_training(layer)]
    exported = model
    if left_out:
        exported = keras.models.clone_model(
            model,
            clone_function=lambda layer: layer,  # the same layers, weights and all
            call_function=lambda layer, *args, **kwargs: args[0] if _acts_only_in_training(layer) else layer(*args, **kwargs),
        )
    return model, exported, appended, left_out


def _ends_in_softmax(model) -> bool:
    import keras

    last = model.layers[-1]
    return isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax


def _acts_only_in_training(layer) -> bool:
    """Keras's random augmentation layers (`RandomFlip`, `RandomRotation`, ...), alone or in a Sequential of them."""
    import keras

    if isinstance(layer, keras.Sequential):
        return bool(layer.layers) and all(map(_acts_only_in_training, layer.layers))
    return type(layer).__name__.startswith("Random") and type(layer).__module__.startswith("keras.")
