"""The outer loop of a meta recipe, its evaluation protocol, and reloading its learner.

Meta-training samples a meta-batch of tasks per iteration, meta-validates on a
fixed set of tasks every `evaluation.every` iterations and keeps the best
checkpoint; the best weights are then evaluated on `evaluation.tasks` fixed
meta-test tasks, as the papers do (mean and 95% interval per step count).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time

import keras
import numpy as np

from workbench import interrupts, runs
from workbench.data import meta_features
from workbench.devices import use_xla
from workbench.errors import RunError, TrainingError
from workbench.history import HistoryFile
from workbench.meta.learner import MetaLearner, summarize
from workbench.meta.tasks import TaskDistribution, build_tasks
from workbench.models.layers import is_convolutional
from workbench.optimizers import learning_rate, make_optimizer
from workbench.precision import output_dtype
from workbench.progress import report as report_progress
from workbench.resume import ResumePoint

log = logging.getLogger(__name__)

VALIDATION_SEED = 1
TEST_SEED = 2


def build_meta_model(recipe, tasks: TaskDistribution, base_run=None) -> keras.Model:
    """The network whose initialisation is meta-learned; its last layer is named `head`.

    `base_run` is the finished run of a `source: recipe` base.
    """
    from workbench.models.builtin import HEAD_LAYER, build_conv4, build_mlp

    if recipe.model.builtin == "mlp":
        return build_mlp(tasks.input_shape, tasks.outputs)
    if recipe.model.builtin == "conv4":
        return _with_scaling(
            build_conv4(tasks.input_shape, tasks.outputs, **({"filters": recipe.model.filters} if recipe.model.filters else {}))
        )
    from workbench.models import freezing
    from workbench.models.bases import build_backbone

    backbone = build_backbone(recipe.model.base, tasks.input_shape, base_run)
    freezing.freeze(backbone, recipe.model.freeze.layers, recipe.model.freeze.batchnorm)
    inputs = keras.Input(tasks.input_shape, name="image")
    x = backbone(inputs)
    for index, units in enumerate(recipe.model.head.units):
        x = keras.layers.Dense(units, activation=recipe.model.head.activation, name=f"head_dense_{index}")(x)
    outputs = keras.layers.Dense(tasks.outputs, name=HEAD_LAYER, dtype=output_dtype())(x)
    return keras.Model(inputs, outputs, name="meta_model")


def _with_scaling(network: keras.Model) -> keras.Model:
    """`network` (a chain of layers) taking raw [0, 255] pixels: a Rescaling layer in front."""
    from workbench.models.preprocessing import scale_to_unit

    inputs = keras.Input(network.input_shape[1:], name="image")
    x = scale_to_unit()(inputs)
    for layer in network.layers[1:]:
        x = layer(x)
    return keras.Model(inputs, x, name=network.name)


def build_learner(recipe, model: keras.Model, tasks: TaskDistribution) -> MetaLearner:
    return learner_for_loss(recipe, model, tasks.loss)


def learner_for_loss(recipe, model: keras.Model, loss: str) -> MetaLearner:
    """The learner of a meta recipe for tasks scored by `loss` (a key of `workbench.meta.adapt.LOSSES`)."""
    outer = recipe.outer
    rate = learning_rate(outer.learning_rate, outer.lr_schedule, outer.iterations)
    pretrain = recipe.algorithm == "pretrain"  # the transfer baseline: no inner loop in training
    return MetaLearner(
        model,
        algorithm="maml" if pretrain else recipe.algorithm,
        inner_steps=0 if pretrain else recipe.inner.steps,
        inner_learning_rate=recipe.inner.learning_rate,
        first_order=True if recipe.inner.first_order or pretrain else None,
        loss=loss,
        optimizer=make_optimizer(outer.optimizer, rate),
        multi_step_loss=recipe.inner.multi_step_loss,
        multi_step_anneal=recipe.inner.multi_step_anneal,
        learn_inner_rates=recipe.inner.learn_rates,
        first_order_iterations=0 if pretrain else recipe.inner.first_order_iterations,
        jit_compile=use_xla(recipe.jit_compile, convolutional=is_convolutional(model)),
    )


def evaluate_learner(learner: MetaLearner, sampler, tasks: int, steps: list[int], seed: int, progress: bool = False) -> list[dict]:
    """Adapt to `tasks` fixed tasks and report the query metric per step count (with a progress bar on a terminal)."""
    values: dict[int, list[np.ndarray]] = {step: [] for step in steps}
    bar = keras.utils.Progbar(tasks, unit_name="task", verbose=1 if progress and sys.stdout.isatty() else 0)
    for chunk in sampler.fixed_tasks(tasks, seed=seed, chunk_size=50):
        for step, per_task in learner.evaluate(chunk, steps=steps).items():
            values[step].append(np.asarray(per_task))
        bar.add(len(per_task))
    results = []
    for step in steps:
        mean, ci95 = summarize(np.concatenate(values[step]))
        results.append({"steps": step, "mean": float(mean), "ci95": float(ci95), "tasks": tasks})
    return results


def train_meta(recipe, run: runs.Run, base_run=None, resuming: bool = False) -> dict:
    """Meta-train `recipe` in `run` (from its last resume point when `resuming`); return its metrics.

    The caller seeds the random state; `base_run` is the finished run of a `source: recipe` base.
    """
    tasks = build_tasks(recipe.tasks, recipe.seed)
    meta_features.record_tasks(run, tasks, meta_features.dataset_name(recipe.tasks))
    learner = build_learner(recipe, build_meta_model(recipe, tasks, base_run), tasks)
    if recipe.outer.meta_batch_size % learner.replicas:
        raise TrainingError(
            f"outer.meta_batch_size ({recipe.outer.meta_batch_size}) must split evenly over the {learner.replicas} replicas "
            f"of distribute: {recipe.distribute.strategy}; use a multiple of {learner.replicas}"
        )
    training = MetaTraining(recipe, run, tasks, learner)
    if resuming:
        training.restore()
    training.train()
    return training.finish()


class TrainingClock:
    """Wall-clock and CPU seconds (all threads) spent training, summed over a resumed run's sessions.

    `cpu` is None for runs whose earlier sessions did not record it, and stays None.
    """

    def __init__(self, wall: float = 0.0, cpu: float | None = 0.0):
        self.wall, self.cpu = wall, cpu
        self._started: tuple[float, float] | None = None

    def start(self) -> None:
        self._started = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.wall, self.cpu = self._elapsed()
        self._started = None

    def totals(self) -> dict:
        wall, cpu = self._elapsed()
        return {"training_seconds": wall, "training_cpu_seconds": cpu}

    def _elapsed(self) -> tuple[float, float | None]:
        if self._started is None:
            return self.wall, self.cpu
        wall, cpu = time.perf_counter() - self._started[0], time.process_time() - self._started[1]
        return self.wall + wall, None if self.cpu is None else self.cpu + cpu


class MetaTraining:
    """The outer loop of one run: iterations, meta-validation, best checkpoint, resume points.

    A resume point (weights, optimizer variables, learned rates, the task
    stream's random state, best-so-far) is written at every meta-validation, at
    most every `RESUME_SECONDS` otherwise, and on Ctrl-C; a resumed run draws
    the same tasks as an uninterrupted one from there on.
    """

    RESUME_SECONDS = 10.0

    def __init__(self, recipe, run: runs.Run, tasks: TaskDistribution, learner: MetaLearner):
        self.recipe, self.run, self.tasks, self.learner = recipe, run, tasks, learner
        self.point = ResumePoint(run)
        self.history = HistoryFile(run.file(runs.HISTORY_FILE))
        self.best: dict | None = None
        self.completed = 0  # iterations whose meta-update has been applied
        self.clock = TrainingClock()
        self.better = (lambda new, old: new < old) if tasks.regression else (lambda new, old: new > old)

    def restore(self) -> None:
        saved = self.point.load()
        if saved is None:
            return  # killed before the first resume point: start over
        state, folder = saved
        runs.load_variables(self.learner.model.variables, folder / runs.MODEL_VARIABLES)
        runs.load_variables(self.learner.optimizer.variables, folder / runs.OPTIMIZER_VARIABLES)
        self.learner.load_inner_rates(folder / runs.INNER_RATES_FILE)
        self.tasks.samplers["train"].rng_state = state["rng"]
        self.completed, self.best = state["iteration"], state["best"]
        self.clock = TrainingClock(state["training_seconds"], state.get("training_cpu_seconds"))
        self.history = HistoryFile(self.run.file(runs.HISTORY_FILE), keep=state["history_rows"])
        log.info("resuming at iteration %d of %d", self.completed + 1, self.recipe.outer.iterations)

    def save_point(self, rng_state: dict) -> None:
        def write(folder):
            runs.save_variables(self.learner.model.variables, folder / runs.MODEL_VARIABLES)
            runs.save_variables(self.learner.optimizer.variables, folder / runs.OPTIMIZER_VARIABLES)
            self.learner.save_inner_rates(folder / runs.INNER_RATES_FILE)

        state = {
            "iteration": self.completed,
            "best": self.best,
            "rng": rng_state,
            "history_rows": len(self.history.rows),
            **self.clock.totals(),
        }
        self.point.save(state, write)

    def train(self) -> None:
        import tensorflow as tf

        outer, evaluation, metric = self.recipe.outer, self.recipe.evaluation, self.tasks.metric
        sampler = self.tasks.samplers["train"]
        writer = tf.summary.create_file_writer(str(self.run.file(runs.LOGS_DIR)))
        progress = keras.utils.Progbar(
            outer.iterations, stateful_metrics=["loss", metric, "val", "it/s"], verbose=1 if sys.stdout.isatty() else 0
        )
        self.clock.start()
        started = last_point = time.perf_counter()
        first = self.completed + 1
        log_every = max(1, min(evaluation.every, 100))
        for iteration in range(first, outer.iterations + 1):
            # An iteration, its validation and its resume point are one step: a signal waits for its end.
            with interrupts.deferred():
                result = self.learner.train_step(sampler.sample(outer.meta_batch_size))
                self.completed = iteration
                loss = float(result["loss"])
                if not np.isfinite(loss):
                    raise TrainingError(
                        f"the meta-loss became {loss} at iteration {iteration}; the last good resume point is kept. "
                        "Lower outer.learning_rate or inner.learning_rate"
                    )
                speed = (iteration - first + 1) / (time.perf_counter() - started)
                values = [("loss", loss), (metric, float(result["metric"])), ("it/s", speed)]
                validate = iteration % evaluation.every == 0 or iteration == outer.iterations
                if validate or iteration % log_every == 0:
                    row = {
                        "phase": "meta-train",
                        "iteration": iteration,
                        "loss": loss,
                        metric: float(result["metric"]),
                        "iterations_per_second": speed,
                    }
                    if validate:
                        row[f"val_{metric}"] = self.validate(iteration, loss)
                        report_progress(math.ceil(iteration / evaluation.every), {f"val_{metric}": row[f"val_{metric}"]})
                        values.append(("val", row[f"val_{metric}"]))
                    self.history.append(row)
                    with writer.as_default(step=iteration):
                        for name, value in row.items():
                            if name not in ("phase", "iteration"):
                                tf.summary.scalar(name, value)
                if validate or interrupts.requested() or time.perf_counter() - last_point > self.RESUME_SECONDS:
                    self.save_point(sampler.rng_state)
                    last_point = time.perf_counter()
                progress.update(iteration, values)
            interrupts.check()
        writer.flush()
        self.clock.stop()

    def validate(self, iteration: int, loss: float) -> float:
        """Meta-validate; keep the best weights; return the mean validation metric."""
        evaluation, checkpoints = self.recipe.evaluation, self.run.file(runs.CHECKPOINTS_DIR)
        (validation,) = evaluate_learner(
            self.learner, self.tasks.samplers["validation"], evaluation.validation_tasks, [self.recipe.inner.steps], VALIDATION_SEED
        )
        if self.best is None or self.better(validation["mean"], self.best["mean"]):
            self.best = {"iteration": iteration, **validation}
            runs.save_weights(self.learner.model, checkpoints / runs.BEST_WEIGHTS)
            self.learner.save_inner_rates(checkpoints / runs.BEST_RATES)
        log.info(
            "iteration %d: loss %.4f, meta-validation %s %.4f (best %.4f at %d)",
            iteration,
            loss,
            self.tasks.metric,
            validation["mean"],
            self.best["mean"],
            self.best["iteration"],
        )
        return validation["mean"]

    def finish(self) -> dict:
        """Evaluate the best weights on the meta-test tasks; write the model and metrics."""
        checkpoints, evaluation = self.run.file(runs.CHECKPOINTS_DIR), self.recipe.evaluation
        self.learner.model.load_weights(checkpoints / runs.BEST_WEIGHTS)
        self.learner.load_inner_rates(checkpoints / runs.BEST_RATES)
        started = time.perf_counter()
        results = evaluate_learner(self.learner, self.tasks.samplers["test"], evaluation.tasks, evaluation.steps, TEST_SEED, progress=True)
        metrics = {
            "metric": self.tasks.metric,
            "evaluation": results,
            "best_validation": self.best,
            **self.clock.totals(),
            "evaluation_seconds": time.perf_counter() - started,
            "classes": self.tasks.classes,
        }
        runs.save_model(self.learner.export_model(), self.run.file(runs.MODEL_FILE))
        self.learner.save_inner_rates(self.run.file(runs.INNER_RATES_FILE))
        self.run.write_json(runs.ADAPTATION_FILE, adaptation_settings(self.recipe, self.tasks))
        self.run.write_json(runs.METRICS_FILE, metrics)
        return metrics


def adaptation_settings(recipe, tasks: TaskDistribution) -> dict:
    """What adapting the saved initialisation needs, beside `model.keras` and the inner rates."""
    return {
        "algorithm": recipe.algorithm,
        "steps": recipe.inner.steps,
        "inner_learning_rate": recipe.inner.learning_rate,
        "learned_rates": runs.INNER_RATES_FILE if (recipe.algorithm in ("metasgd", "meta_lstm") or recipe.inner.learn_rates) else None,
        "loss": tasks.loss,
        "metric": tasks.metric,
        "ways": tasks.outputs if not tasks.regression else None,
        "input_shape": list(tasks.input_shape),
    }


def load_learner(run: runs.Run):
    """The recipe, task distribution and learner of a finished meta run, ready to adapt."""
    from workbench.models.bases import load_model

    recipe = run.load_recipe()
    tasks = build_tasks(recipe.tasks, recipe.seed)
    learner = build_learner(recipe, load_model(run.file(runs.MODEL_FILE)), tasks)
    learner.load_inner_rates(run.file(runs.INNER_RATES_FILE))
    return recipe, tasks, learner


def evaluate_meta_run(run_path, steps: list[int] | None = None, tasks: int | None = None) -> dict:
    """Rerun the meta-test protocol of a finished run; writes `evaluation.json`.

    `steps` and `tasks` default to the recipe's. The tasks come from the same
    fixed seed as the run's own meta-test, so with the recipe's task count the
    figures for its steps are those of `metrics.json`.
    """
    run = runs.Run.open(run_path)
    recipe, distribution, learner = load_learner(run)
    steps = steps or recipe.evaluation.steps
    results = evaluate_learner(learner, distribution.samplers["test"], tasks or recipe.evaluation.tasks, steps, TEST_SEED, progress=True)
    report = {"metric": distribution.metric, "evaluation": results}
    run.write_json(runs.EVALUATION_FILE, report)
    return report


def load_adaptation(run: runs.Run):
    """The recipe, adaptation settings (`adaptation.json`) and learner of a finished meta run, ready to adapt.

    Unlike `load_learner`, it loads none of the recipe's task data: adapting
    needs only the model, its inner rates and these settings.
    """
    from workbench.models.bases import load_model

    path = run.file(runs.ADAPTATION_FILE)
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunError(f"{path}: unreadable adaptation settings ({error}); a finished meta run writes them beside its model") from None
    recipe = run.load_recipe()
    learner = learner_for_loss(recipe, load_model(run.file(runs.MODEL_FILE)), settings["loss"])
    learner.load_inner_rates(run.file(runs.INNER_RATES_FILE))
    return recipe, settings, learner
