"""What an export starts from: the model, what its outputs mean, the held-out inputs to prove it on, calibration images.

A transfer run directory (or the `model.keras` in one) brings its own held-out
images, the recipe's test split, and its training images for int8 calibration.
A bare `.keras` classifier (what `workbench adapt` writes) brings neither:
`--data` names a folder of class folders for both. A meta run exports its
meta-learned initialisation, checked on the query inputs of its own meta-test
tasks: for classification its outputs are the probabilities of a task's ways
before adaptation, for regression (sinusoids) the predicted y of each x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench import runs
from workbench.errors import ArgumentError, ModelError, RunError

CALIBRATION_IMAGES = 300  # int8 ranges from a few hundred training images
PARITY_TASKS = 20  # meta runs: the first meta-test tasks' queries are the parity inputs

CLASSIFIER_OUTPUT = "class probabilities (softmax), one per class in `classes`, in that order"
WAYS_OUTPUT = (
    "probabilities of a task's {ways} ways before adaptation (the meta-learned initialisation); `workbench adapt` it for named classes"
)
REGRESSION_OUTPUT = "the predicted y of each x before adaptation (the meta-learned initialisation)"
HEADS_OUTPUT = (
    "the class probabilities of every head side by side, {slices}; `classes` names each output `head: label`; "
    "top-1 and accuracy are the first head's"
)


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
    output_meaning: str = CLASSIFIER_OUTPUT
    regression: bool = False  # outputs are values, not probabilities: parity compares values only
    calibration: np.ndarray | None = None
    calibration_data: str | None = None
    primary: slice | None = None  # several heads: the outputs of the first, which top-1 and accuracy read


def load_subject(path: Path, data: Path | None, calibrate: bool) -> Subject:
    """The classifier at `path` and the images to check its export on (and calibrate with, when `calibrate`)."""
    from workbench.evaluation import Classifier, _folder_examples, _recipe_examples

    path = Path(path)
    run = _finished_run(path)
    if run is not None and run.manifest.get("kind") == "meta":
        return _meta_subject(run, data, calibrate)
    classifier = Classifier.load(path)
    if classifier.heads is not None:
        return _heads_subject(path, run, classifier, data, calibrate)
    if classifier.model.inputs[0].dtype != "float32":
        raise ModelError(f"{path}: takes {classifier.model.inputs[0].dtype} inputs; exports take float32 images")
    if data is not None:
        images, labels = _folder_examples(Path(data), classifier)
        source = str(data)
    elif run is not None:
        images, labels, split, _ = _recipe_examples(run.load_recipe())
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


def _meta_subject(run: runs.Run, data: Path | None, calibrate: bool) -> Subject:
    """A meta run's initialisation, with the query inputs of its first meta-test tasks to check it on."""
    from workbench.meta.runner import TEST_SEED
    from workbench.meta.tasks import build_tasks
    from workbench.models.bases import load_model

    recipe = run.load_recipe()
    tasks = build_tasks(recipe.tasks, recipe.seed)
    adapt_first = f"`workbench adapt {run.path} --support FOLDER -o MODEL.keras`, then export MODEL.keras with --data"
    if data is not None:
        raise ArgumentError(f"{run.path}: a meta run is checked on its own meta-test tasks, not --data; for your classes, {adapt_first}")
    if calibrate and tasks.regression:
        raise ArgumentError(f"{run.path}: a regression initialisation exports in float32 only; leave out --quantize")
    if calibrate:
        raise ArgumentError(f"{run.path}: an initialisation is quantized once it is adapted; {adapt_first} and --quantize")
    (episodes,) = tasks.samplers["test"].fixed_tasks(PARITY_TASKS, seed=TEST_SEED, chunk_size=PARITY_TASKS)
    inputs = np.asarray(episodes.query_x, "float32")
    inputs = inputs.reshape(-1, *inputs.shape[2:])
    labels = np.asarray(episodes.query_y).reshape(-1)
    model = load_model(run.file(runs.MODEL_FILE))
    if tasks.regression:
        meaning, names = REGRESSION_OUTPUT, []
    else:
        meaning, names = WAYS_OUTPUT.format(ways=tasks.outputs), [f"way {index}" for index in range(tasks.outputs)]
    model, exported, appended, left_out = for_export(model, probabilities=not tasks.regression)
    data = f"the queries of {PARITY_TASKS} meta-test tasks"
    return Subject(model, exported, names, inputs, labels, data, appended, left_out, meaning, regression=tasks.regression)


def _heads_subject(path: Path, run: runs.Run | None, classifier, data: Path | None, calibrate: bool) -> Subject:
    """A model with several heads exports as one output: the heads' probabilities side by side, in the recipe's head order.

    It is checked on its run's test split (or validation), whose labels give the
    first head's: top-1 agreement and accuracy are that head's, the largest
    difference is over every output.
    """
    import keras

    from workbench.data.head_labels import head_labels
    from workbench.evaluation import _recipe_examples

    if run is None or data is not None:
        raise ArgumentError(
            f"{path}: a model with several heads is checked on its run's own held-out split, whose labels every head reads; "
            "export the run directory, without --data"
        )
    recipe = run.load_recipe()
    images, labels, split, splits = _recipe_examples(recipe)
    first = recipe.heads[0]
    first_labels = head_labels(first, splits.class_names, splits.class_groups).of_class[labels]
    order = [head.name for head in recipe.heads]
    joined = keras.layers.Concatenate(name="heads")([classifier.model.output[name] for name in order])
    model, exported, _, left_out = for_export(keras.Model(classifier.model.inputs, joined, name="heads"), probabilities=False)
    starts = np.cumsum([0] + [len(classifier.heads[name]) for name in order])
    slices = ", ".join(f"{name} [{start}, {end})" for name, start, end in zip(order, starts, starts[1:], strict=False))
    names = [f"{name}: {label}" for name in order for label in classifier.heads[name]]
    subject = Subject(
        model,
        exported,
        names,
        np.asarray(images, "float32"),
        np.asarray(first_labels),
        f"the run's {split} split",
        False,
        left_out,
        HEADS_OUTPUT.format(slices=slices),
        primary=slice(0, int(starts[1])),
    )
    if calibrate:
        subject.calibration, subject.calibration_data = _training_images(run), "the run's training split"
    return subject


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


def for_export(model, probabilities: bool = True):
    """The model to compare with, the model to export, whether a softmax was appended, and the layers left out.

    A classifier with logits out gets a softmax, so that every export outputs
    probabilities (`probabilities=False`: a regression model, left as it is). Augmentation layers go from the exported model: they act only
    in training, but their random ops stay in the traced graph, and neither ONNX
    nor LiteRT has them. Parity is measured against the model with them.
    """
    import keras

    from workbench.precision import float32_copy

    model = float32_copy(model)  # a mixed-precision model exports computing in float32
    appended = probabilities and not _ends_in_softmax(model)
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
