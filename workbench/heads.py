"""The outputs of a transfer model: one softmax head, or several named ones trained together.

With `heads`, each head has its own labels (through `workbench.data.head_labels`),
loss, weight in the total loss, and metrics, which Keras logs under the head's
name (`character_accuracy`, `val_alphabet_loss`). The first head is the primary
task: its accuracy is also logged as `accuracy` (and `val_accuracy`), so that a
phase's `monitor` and early stopping read the same names with one head or several,
and `loss` is the weighted total either way.
"""

from __future__ import annotations

import dataclasses

import keras

from workbench.data.datasets import ImageSplits
from workbench.data.head_labels import head_labels, label_heads
from workbench.devices import use_xla

__all__ = ["Outputs", "outputs_of", "compile_model", "scores", "PrimaryHeadLogs"]


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What the model outputs: the label names of each head (one unnamed head: `heads` is None)."""

    class_names: list[str]
    heads: dict[str, list[str]] | None = None

    @property
    def sizes(self) -> int | dict[str, int]:
        """The output size, or each head's."""
        return len(self.class_names) if self.heads is None else {name: len(names) for name, names in self.heads.items()}

    @property
    def names_file(self) -> list[str] | dict[str, list[str]]:
        """What `classes.json` holds: the class names, or each head's label names."""
        return self.class_names if self.heads is None else self.heads


def outputs_of(recipe, data: ImageSplits) -> tuple[Outputs, ImageSplits]:
    """The outputs of `recipe` on `data`, and `data` with each head's labels where there are several heads."""
    if recipe.heads is None:
        return Outputs(data.class_names), data
    labels = {head.name: head_labels(head, data.class_names, data.class_groups) for head in recipe.heads}
    tables = {name: found.of_class for name, found in labels.items()}
    relabelled = dataclasses.replace(
        data,
        train=label_heads(data.train, tables),
        validation=None if data.validation is None else label_heads(data.validation, tables),
        test=None if data.test is None else label_heads(data.test, tables),
    )
    return Outputs(data.class_names, {name: found.names for name, found in labels.items()}), relabelled


def compile_model(model: keras.Model, recipe, optimizer: keras.optimizers.Optimizer | None = None) -> None:
    """Compile `model` with the losses, weights and metrics that every phase, and the test evaluation, report."""
    if recipe.heads is None:
        losses, weights, metrics = keras.losses.SparseCategoricalCrossentropy(), None, [_metric("accuracy")]
    else:
        losses = {head.name: keras.losses.SparseCategoricalCrossentropy() for head in recipe.heads}
        weights = {head.name: head.loss_weight for head in recipe.heads}
        metrics = {head.name: [_metric(name) for name in dict.fromkeys(("accuracy", *head.metrics))] for head in recipe.heads}
    model.compile(
        optimizer=optimizer or "adam", loss=losses, loss_weights=weights, metrics=metrics, jit_compile=use_xla(recipe.jit_compile)
    )


def _metric(name: str) -> keras.metrics.Metric:
    if name == "top5_accuracy":
        return keras.metrics.SparseTopKCategoricalAccuracy(k=5, name=name)
    return keras.metrics.SparseCategoricalAccuracy(name=name)


def scores(model: keras.Model, dataset, recipe, examples: int) -> dict:
    """`{"loss", "accuracy", "examples"}` of a compiled model on `dataset`; with several heads, also `"heads"`: each one's figures.

    `loss` is the weighted total and `accuracy` the primary (first) head's.
    """
    found = {name: float(value) for name, value in model.evaluate(dataset, verbose=0, return_dict=True).items()}
    if recipe.heads is None:
        return {"loss": found["loss"], "accuracy": found["accuracy"], "examples": examples}
    heads = {
        head.name: {key.removeprefix(f"{head.name}_"): value for key, value in found.items() if key.startswith(f"{head.name}_")}
        for head in recipe.heads
    }
    primary = recipe.heads[0].name
    return {"loss": found["loss"], "accuracy": heads[primary]["accuracy"], "examples": examples, "heads": heads}


class PrimaryHeadLogs(keras.callbacks.Callback):
    """Logs the primary head's accuracy as `accuracy` and `val_accuracy` too; first in a callback list, so the others read them."""

    def __init__(self, primary: str):
        super().__init__()
        self.primary = primary

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for prefix in ("", "val_"):
            key = f"{prefix}{self.primary}_accuracy"
            if key in logs:
                logs[f"{prefix}accuracy"] = logs[key]
