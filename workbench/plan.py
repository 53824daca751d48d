"""`workbench validate --plan`: what each phase will train, before anything trains.

The model is built with no pretrained weights (a `source: recipe` base is built
from its recipe, not run), so the plan is quick and needs no downloads.
"""

from __future__ import annotations

from pathlib import Path

import keras

from workbench.models import freezing
from workbench.models.bases import BACKBONE, backbone_of


def describe_plan(recipe) -> str:
    if recipe.kind == "meta":
        return _describe_meta(recipe)
    model = _plan_model(recipe)
    backbone = model.get_layer(BACKBONE)
    lines = [f"  model: {model.count_params():,} parameters, {len(freezing.selectable_layers(backbone))} base layers"]
    for phase in recipe.schedule:
        if phase.unfreeze is not None:
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
    from workbench.transfer import build_transfer_model

    shape = (*recipe.data.image_size, recipe.data.channels)
    backbone = None
    if recipe.base.source == "recipe":
        from workbench.recipe import load_recipe

        backbone = backbone_of(_plan_model(load_recipe(Path(recipe.base.path))), recipe.base.layer)
    return build_transfer_model(recipe, shape, _class_count(recipe), weights="none", backbone=backbone)


def _class_count(recipe) -> int:
    data = recipe.data
    if recipe.head.classes:
        return recipe.head.classes
    if data.source == "synthetic":
        return data.classes
    if data.source == "folder":
        from workbench.data.images import ImageFolder

        return len(ImageFolder.open(data.path).classes)
    return 2  # a TFDS dataset's classes are known only once it is prepared


def _describe_meta(recipe) -> str:
    inner, outer = recipe.inner, recipe.outer
    return "\n".join(
        [
            f"  algorithm {recipe.algorithm}: {inner.steps} inner steps at {inner.learning_rate:g}"
            + (" (first order)" if inner.first_order or recipe.algorithm == "fomaml" else ""),
            f"  outer: {outer.optimizer} at {outer.learning_rate:g} ({outer.lr_schedule}), meta-batch {outer.meta_batch_size}, {outer.iterations:,} iterations",
            f"  evaluation: {recipe.evaluation.tasks} tasks, steps {recipe.evaluation.steps}",
        ]
    )
