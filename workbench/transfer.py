"""The phased fine-tune schedule of a transfer recipe.

Each phase applies its `unfreeze`, compiles (Keras reads `trainable` only at
compile time), fits with the best checkpoint by the phase's validation metric,
and restores that checkpoint before the next phase starts.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
from pathlib import Path

import keras

from workbench import runs
from workbench.data.datasets import ImageSplits, load_image_splits
from workbench.models import freezing
from workbench.models.bases import BACKBONE, build_backbone
from workbench.models.classifier import build_classifier
from workbench.optimizers import learning_rate, make_optimizer

log = logging.getLogger(__name__)


def build_transfer_model(
    recipe, image_shape, classes: int, runs_dir: Path | None = None, weights: str | None = None, backbone: keras.Model | None = None
) -> keras.Model:
    """The classifier of a transfer recipe, with `freeze` applied.

    `backbone`, when given, stands in for the recipe's base (the plan builds a
    `source: recipe` base from its recipe instead of running it).
    """
    backbone = backbone or build_backbone(recipe.base, image_shape, runs_dir, weights=weights)
    model = build_classifier(backbone, recipe.head, classes, recipe.data.augment, seed=recipe.seed)
    freezing.freeze(backbone, recipe.freeze.layers, recipe.freeze.batchnorm)
    return model


def train_transfer(recipe, run: runs.Run, runs_dir: Path) -> dict:
    """Train a transfer recipe in `run`; return its metrics."""
    keras.utils.set_random_seed(recipe.seed)
    data = load_image_splits(recipe.data, recipe.seed)
    log.info("data: %s images per split, %d classes", data.counts, len(data.class_names))
    classes = recipe.head.classes or len(data.class_names)
    model = build_transfer_model(recipe, data.image_shape, classes, runs_dir)
    run.write_json(runs.CLASSES_FILE, data.class_names)
    history = HistoryFile(run.file(runs.HISTORY_FILE))
    phases = []
    for index, phase in enumerate(recipe.schedule):
        if phase.unfreeze is not None:
            freezing.unfreeze(model.get_layer(BACKBONE), phase.unfreeze, recipe.freeze.batchnorm)
        phases.append(_fit_phase(model, phase, f"phase-{index:02d}-{_slug(phase.name)}", recipe, data, run, history))
    metrics = {"phases": phases, **_test_metrics(model, data)}
    save_model(model, run.file(runs.MODEL_FILE))
    if recipe.baseline == "scratch":
        metrics["baseline"] = {"scratch": _scratch_baseline(model, recipe, data, run, history)}
    run.write_json(runs.METRICS_FILE, metrics)
    return metrics


def _test_metrics(model: keras.Model, data: ImageSplits) -> dict:
    if data.test is None:
        return {}
    loss, accuracy = model.evaluate(data.test, verbose=0)
    return {"test": {"loss": float(loss), "accuracy": float(accuracy), "examples": data.counts["test"]}}


def _scratch_baseline(model: keras.Model, recipe, data: ImageSplits, run: runs.Run, history: HistoryFile) -> dict:
    """The same network, freshly initialised and all trainable, on the same data.

    It trains for as many epochs as the whole schedule, with the first phase's
    optimizer and learning rate, so the comparison with transfer is like for like.
    """
    keras.utils.set_random_seed(recipe.seed)
    scratch = keras.models.clone_model(model)  # new layers, freshly initialised weights
    freezing.set_trainable(scratch.get_layer(BACKBONE), freezing.selectable_layers(scratch.get_layer(BACKBONE)), "train")
    first = recipe.schedule[0]
    phase = first.model_copy(
        update={"name": "scratch", "epochs": sum(p.epochs for p in recipe.schedule), "warmup_epochs": 0.0, "early_stopping": None}
    )
    result = _fit_phase(scratch, phase, "baseline-scratch", recipe, data, run, history)
    return {**result, **_test_metrics(scratch, data)}


def _fit_phase(model: keras.Model, phase, label: str, recipe, data: ImageSplits, run: runs.Run, history: HistoryFile) -> dict:
    steps = math.ceil(data.counts["train"] / recipe.data.batch_size)
    rate = learning_rate(phase.learning_rate, phase.lr_schedule, steps * phase.epochs, round(steps * phase.warmup_epochs))
    model.compile(
        optimizer=make_optimizer(phase.optimizer, rate, phase.momentum, phase.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    validation = data.validation
    monitor = phase.monitor if validation is not None else phase.monitor.removeprefix("val_")
    checkpoint = run.file(runs.CHECKPOINTS_DIR) / f"{label}.weights.h5"
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint, monitor=monitor, save_best_only=True, save_weights_only=True),
        keras.callbacks.TensorBoard(run.file(runs.LOGS_DIR) / label),
        history.callback(phase.name),
    ]
    if phase.early_stopping is not None:
        stop = phase.early_stopping
        stop_monitor = stop.monitor if validation is not None else stop.monitor.removeprefix("val_")
        callbacks.append(keras.callbacks.EarlyStopping(stop_monitor, min_delta=stop.min_delta, patience=stop.patience))
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    log.info("phase %s: %d trainable parameters, %d frozen", phase.name, trainable, model.count_params() - trainable)
    fitted = model.fit(
        data.train,
        validation_data=validation,
        epochs=phase.epochs,
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles, with the recipe's seed
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if checkpoint.exists():
        model.load_weights(checkpoint)
    result = {"name": phase.name, "epochs": len(fitted.epoch)}
    if validation is not None:
        loss, accuracy = model.evaluate(validation, verbose=0)
        result.update(val_loss=float(loss), val_accuracy=float(accuracy))
    return result


def save_model(model: keras.Model, path: Path) -> None:
    """Save atomically: to a temporary `.keras` file beside `path`, then rename."""
    temporary = path.with_name(f".{path.stem}.tmp.keras")
    model.save(temporary)
    temporary.replace(path)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


class HistoryFile:
    """`history.csv`: one row per epoch across all phases, with a phase column."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def callback(self, phase: str) -> keras.callbacks.Callback:
        history = self

        class Recorder(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                row = {"phase": phase, "epoch": len(history.rows) + 1, "phase_epoch": epoch + 1}
                row.update({key: float(value) for key, value in (logs or {}).items()})
                history.append(row)

        return Recorder()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        columns = list(dict.fromkeys(key for r in self.rows for key in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns)
        writer.writeheader()
        writer.writerows(self.rows)
        runs.atomic_write_text(self.path, buffer.getvalue())
