"""`workbench validate --plan`: what each phase will train, before anything trains.

First the data are checked by the rules the run applies (the data layer's own
checks), from file listings alone: no image is decoded and TensorFlow is not
imported, so that the plan refuses what `workbench run` would refuse about the
data, at once. TFDS datasets are checked by the run only: their classes are known
once the dataset is prepared.

Then the model is built with no pretrained weights (a `source: recipe` base is
built from its recipe, not run), so the plan is quick and needs no downloads.

Every problem is placed at the recipe field it concerns: `FILE:LINE:COL: field.path: message`.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from workbench.errors import RecipeError, WorkbenchError

if TYPE_CHECKING:
    import keras


def describe_plan(recipe, path: str | Path, overrides: Sequence[str] = ()) -> str:
    """The plan of the recipe loaded from `path` with `overrides`.

    Raises:
        RecipeError: for what the run would refuse about the data, or a model that
            cannot be built, placed at the field of `path` that it concerns.
    """
    if recipe.kind == "sweep":  # the plan of the recipe it tunes, as its file sets it
        from workbench.recipe import load_recipe

        return describe_plan(load_recipe(recipe.recipe), recipe.recipe)
    at = _Placer(path, overrides)
    if recipe.kind == "compare":
        return _describe_compare(recipe, path, overrides)
    if recipe.kind == "meta" and recipe.algorithm == "learned_optimizer":  # optimizees, not few-shot tasks
        from workbench.learned.summary import describe_learned_plan

        return describe_learned_plan(recipe)
    if recipe.kind == "meta":
        _check_tasks(recipe, at)
        return _describe_meta(recipe)
    _check_data(recipe.data, at)
    return _describe_transfer(recipe, at)


class _Placer:
    """`with at("tasks", "ways"):` turns a `WorkbenchError` raised inside into a `RecipeError` at that field."""

    def __init__(self, path: str | Path, overrides: Sequence[str]):
        self.path, self.overrides = path, overrides

    @contextlib.contextmanager
    def __call__(self, *field):
        try:
            yield
        except RecipeError:
            raise  # already placed (the recipe of a `source: recipe` base)
        except WorkbenchError as error:
            from workbench.recipe.loader import recipe_problem

            raise recipe_problem(self.path, field, str(error), self.overrides) from None


def _check_data(data, at: _Placer) -> None:
    """What `load_image_splits` would refuse: fewer than two classes, classes too small to hold images out."""
    from workbench.data.datasets import check_held_out, listed_class_counts
    from workbench.data.images import ImageFolder

    if data.source == "folder":
        with at("data", "path"):
            ImageFolder.open(data.path)  # a missing or empty folder is the path's problem; too few classes left, include's
    with at("data", "include" if data.source == "folder" and data.include is not None else "path"):
        counts = listed_class_counts(data)
    if counts is not None:
        with at("data", "validation" if data.validation else "test"):
            check_held_out(counts, data.validation, data.test)


def _check_tasks(recipe, at: _Placer) -> None:
    """What `build_tasks` would refuse: too few classes for the splits or `ways`, classes smaller than shots + queries."""
    from workbench.data.episodes import check_class_sizes, check_ways
    from workbench.meta.tasks import listed_task_classes

    tasks = recipe.tasks
    if tasks.source == "sinusoid":
        return
    with at("tasks", "path" if tasks.source == "folder" else "validation"):
        listed = listed_task_classes(tasks, recipe.seed)
    for split, counts in listed.items():
        with at("tasks", "ways"):
            check_ways(len(counts), tasks.ways, f"meta-{split}")
        with at("tasks", "shots"):
            check_class_sizes(counts, tasks.shots, tasks.queries, f"meta-{split}")


def _describe_transfer(recipe, at: _Placer) -> str:
    from workbench.quiet import import_tensorflow

    import_tensorflow()
    from workbench.models import freezing
    from workbench.models.bases import BACKBONE

    with at("base", "path" if recipe.base.source in ("file", "run", "recipe") else "name"):
        model = _plan_model(recipe)
    backbone = model.get_layer(BACKBONE)
    lines = [f"  model: {model.count_params():,} parameters, {len(freezing.selectable_layers(backbone))} base layers"]
    for index, phase in enumerate(recipe.schedule):
        if phase.unfreeze is not None:
            with at("schedule", index, "unfreeze"):
                freezing.unfreeze(backbone, phase.unfreeze, recipe.freeze.batchnorm)
        trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
        lines.append(
            f"  phase {phase.name}: {phase.epochs} epochs, {trainable:,} trainable / {model.count_params() - trainable:,} frozen parameters, "
            f"{len(freezing.trainable_layers(backbone))} base layers training, BatchNorm {recipe.freeze.batchnorm}, "
            f"{phase.optimizer} learning rate {phase.learning_rate:g} ({phase.lr_schedule}"
            + (f", {phase.warmup_epochs:g} warm-up epochs" if phase.warmup_epochs else "")
            + ")"
        )
    return "\n".join(lines)


def _plan_model(recipe) -> keras.Model:
    from workbench.models.bases import backbone_of
    from workbench.transfer import build_transfer_model

    shape = (*recipe.data.image_size, recipe.data.channels)
    backbone = None
    if recipe.base.source == "recipe":
        from workbench.recipe import load_recipe

        backbone = backbone_of(_plan_model(load_recipe(Path(recipe.base.path))), recipe.base.layer)
    return build_transfer_model(recipe, shape, _class_count(recipe), weights="none", backbone=backbone)


def _class_count(recipe) -> int | dict[str, int]:
    """The outputs of the head, or of each head, as far as file listings tell them."""
    from workbench.data.datasets import listed_class_counts

    if recipe.heads is None and recipe.head.classes:
        return recipe.head.classes
    counts = listed_class_counts(recipe.data)
    names = ["class 0", "class 1"] if counts is None else list(counts)  # a TFDS dataset's classes are known only once it is prepared
    if recipe.heads is None:
        return len(names)
    return {head.name: _label_count(head, names) for head in recipe.heads}


def _label_count(head, class_names: list[str]) -> int:
    if head.labels == "class":
        return len(class_names)
    if head.labels == "group":
        return max(2, len({PurePosixPath(name).parts[0] for name in class_names}))
    with open(head.labels.file, newline="") as file:
        return max(2, len({row[1] for row in list(csv.reader(file))[1:] if len(row) == 2}))


def _describe_meta(recipe) -> str:
    inner, outer = recipe.inner, recipe.outer
    return "\n".join(
        [
            f"  algorithm {recipe.algorithm}: {inner.steps} inner steps "
            + ("learned by an LSTM, starting " if recipe.algorithm == "meta_lstm" else "")
            + f"at {inner.learning_rate:g}"
            + (" (first order)" if inner.first_order or recipe.algorithm in ("fomaml", "meta_lstm") else ""),
            f"  outer: {outer.optimizer} at {outer.learning_rate:g} ({outer.lr_schedule}), meta-batch {outer.meta_batch_size}, {outer.iterations:,} iterations",
            f"  evaluation: {recipe.evaluation.tasks} tasks, steps {recipe.evaluation.steps}",
        ]
    )


def _describe_compare(recipe, path: str | Path, overrides: Sequence[str]) -> str:
    """The episodes and every entrant; the run checks leakage once it has built the episodes."""
    from workbench.compare.runner import resolve_entrants

    tasks = recipe.tasks
    if tasks.source == "lake_runs":
        episodes = f"the 20 runs of {tasks.path} (20-way 1-shot, 20 queries), as published"
    elif tasks.source == "sinusoid":
        episodes = f"{recipe.evaluation.tasks} episodes of sinusoid regression, {tasks.shots} shots, {tasks.queries} queries"
    else:
        episodes = f"{recipe.evaluation.tasks} episodes of {tasks.ways}-way {tasks.shots}-shot, {tasks.queries} queries, from {tasks.source} classes"
    lines = [f"  {episodes}; scored after steps {recipe.evaluation.steps}"]
    for entrant in resolve_entrants(recipe, Path(path), overrides=overrides):
        source = f"run {entrant.run}" if entrant.run else Path(entrant.recipe_path).name
        way = f"adapts by {entrant.adapt.method}" if entrant.adapt else "adapts its own way"
        lines.append(f"  {entrant.name}: {source} ({entrant.recipe.kind}), {way}")
    return "\n".join(lines)
