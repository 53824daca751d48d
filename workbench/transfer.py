"""The phased fine-tune schedule of a transfer recipe.

Each phase applies its `unfreeze`, compiles (Keras reads `trainable` only at
compile time), fits with the best checkpoint by the phase's validation metric,
and restores that checkpoint before the next phase starts.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import keras

from workbench import callbacks, progress, runs
from workbench.data import meta_features
from workbench.data.datasets import ImageSplits, load_image_splits
from workbench.devices import distributed
from workbench.domain.adaptation import DomainTraining
from workbench.errors import DataError
from workbench.heads import Outputs, PrimaryHeadLogs, compile_model, outputs_of, scores
from workbench.history import HistoryFile
from workbench.models import freezing
from workbench.models.bases import BACKBONE, build_backbone
from workbench.models.classifier import build_classifier, build_multi_head
from workbench.models.fused_batchnorm import fused_batchnorm
from workbench.optimizers import learning_rate, make_optimizer
from workbench.resume import ResumePoint

log = logging.getLogger(__name__)


def build_transfer_model(
    recipe,
    image_shape,
    classes: int | dict[str, int],
    base_run: Path | None = None,
    weights: str | None = None,
    backbone: keras.Model | None = None,
) -> keras.Model:
    """The classifier of a transfer recipe, with `freeze` applied: one head of `classes` outputs, or one per entry of `heads`.

    `base_run` is the finished run of a `source: recipe` base. `backbone`, when
    given, stands in for the recipe's base (the plan builds a `source: recipe`
    base from its recipe instead of running it).
    """
    backbone = backbone or build_backbone(recipe.base, image_shape, base_run, weights=weights)
    if recipe.heads is None:
        model = build_classifier(backbone, recipe.head, classes, recipe.data.augment, seed=recipe.seed)
    else:
        model = build_multi_head(backbone, recipe.heads, classes, recipe.data.augment, seed=recipe.seed)
    freezing.freeze(backbone, recipe.freeze.layers, recipe.freeze.batchnorm)
    return model


def train_transfer(recipe, run: runs.Run, base_run: Path | None = None, resuming: bool = False) -> dict:
    """Train a transfer recipe in `run` (from its last resume point when `resuming`); return its metrics.

    The caller seeds the random state; `base_run` is the finished run of a `source: recipe` base.
    """
    data = load_image_splits(recipe.data, recipe.seed)
    log.info("data: %s images per split, %d classes", data.counts, len(data.class_names))
    meta_features.record_image_splits(run, data, meta_features.dataset_name(recipe.data))
    outputs, data = outputs_of(recipe, data)
    model = build_transfer_model(recipe, data.image_shape, _head_classes(recipe, outputs), base_run)
    run.write_json(runs.CLASSES_FILE, outputs.names_file)
    domain = DomainTraining.prepare(recipe, data, model) if recipe.domain_adaptation is not None else None
    trained, fitted = (domain.model, domain.data) if domain else (model, data)  # what the phases fit: DANN wraps the classifier
    point = ResumePoint(run)
    saved = point.load() if resuming else None
    state = saved[0] if saved else {"phase": 0, "phases": [], "history_rows": 0}
    if saved:
        _log_resume_position(recipe, state)
    history = HistoryFile(run.file(runs.HISTORY_FILE), keep=state["history_rows"])
    phases = list(state["phases"])
    with distributed(trained):
        for index, phase in enumerate(recipe.schedule):
            if phase.unfreeze is not None:
                freezing.unfreeze(model.get_layer(BACKBONE), phase.unfreeze, recipe.freeze.batchnorm)
            if index >= state["phase"]:
                resume_from = saved if saved and index == state["phase"] else None
                extra = domain.callbacks(recipe, index) if domain else []
                phases.append(
                    fit_phase(trained, phase, index, recipe, fitted, run, history, resume_from, point, phases, extra_callbacks=extra)
                )
        if saved and state["phase"] >= len(recipe.schedule):
            runs.load_variables(trained.variables, saved[1] / runs.MODEL_VARIABLES)
            compile_model(trained, recipe)  # only to evaluate: every phase trained before the resume point
        metrics = {"phases": phases, **_training_time(phases), **_test_metrics(trained, data, recipe)}
        if domain:
            metrics["domain"] = domain.report(recipe, metrics.get("test"))
    runs.save_model(model, run.file(runs.MODEL_FILE))
    if recipe.baseline == "scratch":
        metrics["baseline"] = {"scratch": _scratch_baseline(model, recipe, data, run, history)}
    run.write_json(runs.METRICS_FILE, metrics)
    return metrics


def _head_classes(recipe, outputs: Outputs) -> int | dict[str, int]:
    """The outputs of the head (or of each head): the data's classes; `head.classes`, where given, must agree with them."""
    if recipe.heads is not None:
        return outputs.sizes
    class_names = outputs.class_names
    found = len(class_names)
    if recipe.head.classes is not None and recipe.head.classes != found:
        example = ", ".join(class_names[:3]) + (", ..." if found > 3 else "")
        raise DataError(
            f"head.classes: {recipe.head.classes}, but the data has {found} classes ({example}); "
            f"set head.classes: {found} or leave it out (the default is the data's count)"
        )
    return found


def _log_resume_position(recipe, state: dict) -> None:
    if state["phase"] < len(recipe.schedule):
        phase = recipe.schedule[state["phase"]]
        if state.get("epoch"):
            log.info("resuming phase %s after epoch %d of %d", phase.name, state["epoch"], phase.epochs)
        else:
            log.info("resuming at the start of phase %s", phase.name)
    else:
        log.info("resuming after the last phase (%d phases done)", len(recipe.schedule))


def _training_time(phases: list[dict]) -> dict:
    """Wall-clock and CPU seconds (all threads) of fitting, over every phase; None where a phase predates the record."""
    totals = {}
    for key in ("training_seconds", "training_cpu_seconds"):
        values = [phase.get(key) for phase in phases]
        totals[key] = None if None in values else sum(values)
    return totals


def _test_metrics(model: keras.Model, data: ImageSplits, recipe) -> dict:
    """`test`: the weighted loss and the primary head's accuracy; with several heads, each one's figures under `heads` too."""
    if data.test is None:
        return {}
    test = scores(model, data.test, recipe, data.counts["test"])
    heads = test.pop("heads", None)
    return {"test": test, **({"heads": {name: {"test": figures} for name, figures in heads.items()}} if heads else {})}


def _scratch_baseline(model: keras.Model, recipe, data: ImageSplits, run: runs.Run, history: HistoryFile) -> dict:
    """The same network, freshly initialised and all trainable, on the same data.

    It trains for as many epochs as the whole schedule, with the first phase's
    optimizer and learning rate, so the comparison with transfer is like for like.
    It has no resume points: a resumed run trains it again, from the same seed.
    """
    log.info("baseline: the same network from scratch, %d epochs", sum(p.epochs for p in recipe.schedule))
    keras.utils.set_random_seed(recipe.seed)
    scratch = keras.models.clone_model(model)  # new layers, freshly initialised weights
    freezing.set_trainable(scratch.get_layer(BACKBONE), freezing.selectable_layers(scratch.get_layer(BACKBONE)), "train")
    first = recipe.schedule[0]
    phase = first.model_copy(
        update={"name": "scratch", "epochs": sum(p.epochs for p in recipe.schedule), "warmup_epochs": 0.0, "early_stopping": None}
    )
    with distributed(scratch), progress.unheard():  # a comparison, not the run's own training: a sweep does not prune by it
        result = fit_phase(scratch, phase, len(recipe.schedule), recipe, data, run, history, label="baseline-scratch")
        return {**result, **_test_metrics(scratch, data, recipe)}


def fit_phase(
    model: keras.Model,
    phase,
    index: int,
    recipe,
    data: ImageSplits,
    run: runs.Run,
    history: HistoryFile,
    saved: tuple[dict, Path] | None = None,
    point: ResumePoint | None = None,
    completed: list[dict] | None = None,
    label: str | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict:
    """Compile and fit one phase, from `saved` (a resume point inside it) if given.

    With `point`, a resume point is written after every epoch and at the end.
    `extra_callbacks` run after the phase's own (e.g. a schedule of the phase).
    """
    label = label or f"phase-{index:02d}-{_slug(phase.name)}"
    steps = math.ceil(data.counts["train"] / recipe.data.batch_size)
    rate = learning_rate(phase.learning_rate, phase.lr_schedule, steps * phase.epochs, round(steps * phase.warmup_epochs))
    compile_model(model, recipe, make_optimizer(phase.optimizer, rate, phase.momentum, phase.weight_decay))
    initial_epoch, best, stop_state, stopped = 0, None, {}, False
    best_epoch = None
    if saved is not None:
        state, folder = saved
        runs.load_variables(model.variables, folder / runs.MODEL_VARIABLES)
        if state["epoch"]:
            model.optimizer.build(model.trainable_variables)
            runs.load_variables(model.optimizer.variables, folder / runs.OPTIMIZER_VARIABLES)
            initial_epoch, best, stop_state, stopped = state["epoch"], state["best"], state.get("early_stopping") or {}, state["stopped"]
            best_epoch = state.get("best_epoch")
    validation = data.validation
    monitor = phase.monitor if validation is not None else phase.monitor.removeprefix("val_")
    checkpoint = callbacks.BestCheckpoint(run.file(runs.CHECKPOINTS_DIR) / f"{label}.best.npz", monitor, best, best_epoch)
    early = None
    if phase.early_stopping is not None:
        stop = phase.early_stopping
        early = callbacks.ResumableEarlyStopping(
            stop.monitor if validation is not None else stop.monitor.removeprefix("val_"),
            min_delta=stop.min_delta,
            patience=stop.patience,
            **stop_state,
        )
    chain = [PrimaryHeadLogs(recipe.heads[0].name)] if recipe.heads is not None else []
    chain += [
        checkpoint,
        keras.callbacks.TensorBoard(run.file(runs.LOGS_DIR) / label),
        history.callback(phase.name),
        callbacks.StopOnNonFinite(phase.name),
        callbacks.StopOnSignal(),
    ]
    chain += [early] if early else []
    chain += extra_callbacks or []
    if data.shuffle_epoch is not None:
        chain.append(callbacks.ShuffleEpoch(data.shuffle_epoch, index))
    if point is not None:
        chain.append(
            callbacks.ResumeSaver(
                point,
                lambda: {
                    "phase": index,
                    "best": checkpoint.best,
                    "best_epoch": checkpoint.best_epoch,
                    "early_stopping": early.state() if early else None,
                    "history_rows": len(history.rows),
                    "phases": completed or [],
                },
                checkpoint,
            )
        )
    first_epoch = sum(earlier.epochs for earlier in recipe.schedule[:index])  # epochs count over the whole schedule
    chain.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: progress.report(first_epoch + epoch + 1, logs or {})))
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    log.info("phase %s: %d trainable parameters, %d frozen", phase.name, trainable, model.count_params() - trainable)
    epochs = initial_epoch
    clock = (time.perf_counter(), time.process_time())
    if initial_epoch < phase.epochs and not stopped:
        with fused_batchnorm(model):
            fitted = model.fit(
                data.train,
                validation_data=validation,
                initial_epoch=initial_epoch,
                epochs=phase.epochs,
                callbacks=chain,
                shuffle=False,  # the pipeline shuffles, with the recipe's seed
                verbose=1 if sys.stdout.isatty() else 2,
            )
        epochs += len(fitted.epoch)
    spent = {"training_seconds": time.perf_counter() - clock[0], "training_cpu_seconds": time.process_time() - clock[1]}
    checkpoint.restore(model)
    # Epochs count from 1, as Keras prints them; None when no epoch reported the monitor.
    result = {
        "name": phase.name,
        "epochs": epochs,
        "monitor": monitor,
        "best_epoch": checkpoint.best_epoch,
        "trainable_parameters": trainable,
        "frozen_parameters": model.count_params() - trainable,
        **spent,  # this session's fitting: a phase resumed midway counts from the resume point
    }
    if validation is not None:
        found = scores(model, validation, recipe, data.counts["validation"])
        result.update(val_loss=found["loss"], val_accuracy=found["accuracy"])
    if point is not None:
        state = {"phase": index + 1, "epoch": 0, "history_rows": len(history.rows), "phases": [*(completed or []), result]}
        point.save(state, lambda folder: runs.save_variables(model.variables, folder / runs.MODEL_VARIABLES))
    return result


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
