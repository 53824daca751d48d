"""A `kind: meta, algorithm: learned_optimizer` recipe, end to end: optimizees, meta-training, evaluation, files.

The run directory holds the optimizer network as `model.keras` (a standard
Keras file, see `workbench.learned.optimizer_net`) and `metrics.json`:
`{"metric": "loss", "evaluation": [...], "baselines": {name: {"learning_rate",
"evaluation"}}, "curves": {...}, "training": {...}}`. There are no resume points:
a resumed run trains again from the start, which the seed makes identical.
"""

from __future__ import annotations

import logging

import keras

from workbench import runs
from workbench.devices import use_xla
from workbench.learned.evaluation import compare_optimizers
from workbench.learned.optimizees import ImageMLPs, Quadratics, glyph_images
from workbench.learned.optimizer_net import build_optimizer_net
from workbench.learned.training import MetaTrainer
from workbench.optimizers import make_optimizer

log = logging.getLogger(__name__)


def build_families(tasks, seed: int) -> tuple:
    """`(training, held_out)` optimizee families of a recipe's `tasks` section.

    Held-out MLPs train on other drawings of the same glyph classes than the
    training ones; held-out quadratics are other draws of the same distribution.
    """
    if tasks.source == "quadratic":
        family = Quadratics(tasks.dimensions)
        return family, family
    families = []
    for drawing_seed in (seed, seed + 1):
        images, labels = glyph_images(tasks.classes, tasks.samples, tasks.image_size, drawing_seed, tasks.first_class)
        families.append(
            ImageMLPs(images, labels, tasks.classes, hidden=tuple(tasks.hidden), activation=tasks.activation, batch_size=tasks.batch_size)
        )
    return tuple(families)


def build_net(recipe) -> keras.Model:
    settings = recipe.optimizer_net
    return build_optimizer_net(settings.layers, settings.units, settings.preprocessing_p, seed=recipe.seed)


def train_learned_optimizer(recipe, run: runs.Run) -> dict:
    """Meta-train the recipe's learned optimizer in `run`, save it, compare it with the tuned baselines; return the metrics."""
    training, held_out = build_families(recipe.tasks, recipe.seed)
    log.info("optimizees: %s, %d parameters each", training.describe(), training.parameters)
    net = build_net(recipe)
    outer, inner = recipe.outer, recipe.inner
    trainer = MetaTrainer(
        net,
        training,
        make_optimizer(outer.optimizer, outer.learning_rate),
        steps=inner.steps,
        unroll=inner.unroll,
        optimizees=recipe.tasks.optimizees,
        # auto: XLA on GPUs only; on CPU it made the unrolls 2-3x slower (and compiled for a minute), measured here.
        jit_compile=use_xla(recipe.jit_compile, convolutional=True),
    )
    record = trainer.train(outer.iterations, seed=recipe.seed)
    runs.save_model(net, run.file(runs.MODEL_FILE))
    evaluation = recipe.evaluation
    metrics = compare_optimizers(
        net,
        held_out,
        tuning_family=training,
        tasks=evaluation.tasks,
        tuning_tasks=evaluation.tuning_tasks,
        steps=evaluation.steps,
        tuning_steps=inner.steps,
        baselines=evaluation.baselines,
        seed=recipe.seed,
    )
    metrics["training"] = record.as_json()
    run.write_json(runs.METRICS_FILE, metrics)
    return metrics
