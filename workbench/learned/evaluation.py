"""Held-out optimizees: the learned optimizer's loss curve against hand-designed optimizers with tuned learning rates.

The baselines are the update rules of Keras's SGD, Adam, RMSprop and SGD with
Nesterov momentum (0.9), with Keras's defaults, written as pure functions of a
`[problems, parameters]` tensor so that a whole batch of optimizees trains as
one tensor. Each baseline's learning rate is tuned on training optimizees over
a log grid, by the mean loss at the training horizon, as the paper tunes them;
all optimizers then train the same held-out problems (the same starting points
and minibatches). Figures are the mean and 95% interval over problems.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from workbench.errors import ArgumentError
from workbench.learned.optimizer_net import initial_state, propose_updates
from workbench.meta.learner import summarize

BASELINES = ("sgd", "adam", "rmsprop", "nesterov")
LEARNING_RATE_GRID = tuple(float(10.0**exponent) for exponent in np.arange(-4.0, 1.01, 0.5))  # 1e-4 ... 10, half decades
MOMENTUM = 0.9
BETA_1, BETA_2, RHO, EPSILON = 0.9, 0.999, 0.9, 1e-7  # Keras's defaults


def baseline_update(name: str, gradients, slots: tuple, step, learning_rate) -> tuple:
    """One step of baseline `name`: `(update, slots)`; `step` counts from 1 (Adam's bias correction)."""
    if name == "sgd":
        return -learning_rate * gradients, slots
    if name == "nesterov":
        (momentum,) = slots
        momentum = MOMENTUM * momentum - learning_rate * gradients
        return MOMENTUM * momentum - learning_rate * gradients, (momentum,)
    if name == "rmsprop":
        (velocity,) = slots
        velocity = RHO * velocity + (1 - RHO) * tf.square(gradients)
        return -learning_rate * gradients / tf.sqrt(velocity + EPSILON), (velocity,)
    if name == "adam":
        first, second = slots
        first = first + (gradients - first) * (1 - BETA_1)
        second = second + (tf.square(gradients) - second) * (1 - BETA_2)
        step = tf.cast(step, gradients.dtype)
        alpha = learning_rate * tf.sqrt(1 - BETA_2**step) / (1 - BETA_1**step)
        return -alpha * first / (tf.sqrt(second) + EPSILON), (first, second)
    raise ArgumentError(f"Expected a baseline among {', '.join(BASELINES)}. Received: name={name!r}")


def baseline_slots(name: str, parameters) -> tuple:
    """The zero state of baseline `name` for `parameters`."""
    count = {"sgd": 0, "nesterov": 1, "rmsprop": 1, "adam": 2}[name]
    return tuple(tf.zeros_like(parameters) for _ in range(count))


def _gradients(family, data, parameters, step):
    with tf.GradientTape() as tape:
        tape.watch(parameters)
        losses = family.loss(data, parameters, step)
        total = tf.reduce_sum(losses)
    return losses, tape.gradient(total, parameters)


class Curves:
    """Loss curves of one family's problems: `learned(net, problems, steps)` and `baseline(name, rate, problems, steps)`.

    Each returns `[steps + 1, problems]` losses (entry t: the loss after t
    updates, on step t's minibatch). One compiled function per optimizer and
    horizon, reused for every batch of problems and learning rate.
    """

    def __init__(self, family):
        self.family = family
        self._compiled: dict = {}

    def learned(self, net, problems, steps: int) -> np.ndarray:
        key = ("learned", id(net), steps)
        if key not in self._compiled:
            self._compiled[key] = tf.function(lambda data, start: self._learned(net, data, start, steps))
        return self._compiled[key](problems.data, problems.start).numpy()

    def baseline(self, name: str, learning_rate: float, problems, steps: int) -> np.ndarray:
        key = (name, steps)
        if key not in self._compiled:
            self._compiled[key] = tf.function(lambda data, start, rate: self._baseline(name, data, start, rate, steps))
        rate = tf.constant(learning_rate, problems.start.dtype)
        return self._compiled[key](problems.data, problems.start, rate).numpy()

    def _learned(self, net, data, parameters, steps):
        state = initial_state(net, tf.size(parameters), parameters.dtype)
        curve = tf.TensorArray(parameters.dtype, size=steps + 1)
        for step in tf.range(steps):
            losses, gradients = _gradients(self.family, data, parameters, step)
            curve = curve.write(step, losses)
            updates, state = propose_updates(net, gradients, state)
            parameters = parameters + updates
        return curve.write(steps, self.family.loss(data, parameters, steps)).stack()

    def _baseline(self, name, data, parameters, rate, steps):
        slots = baseline_slots(name, parameters)
        curve = tf.TensorArray(parameters.dtype, size=steps + 1)
        for step in tf.range(steps):
            losses, gradients = _gradients(self.family, data, parameters, step)
            curve = curve.write(step, losses)
            updates, slots = baseline_update(name, gradients, slots, step + 1, rate)
            parameters = parameters + updates
        return curve.write(steps, self.family.loss(data, parameters, steps)).stack()


def sample_batches(family, count: int, seed, chunk: int) -> list:
    """`count` problems drawn in batches of at most `chunk`, each batch from its own seed `(seed, index)`."""
    return [
        family.sample(min(chunk, count - start), seed=(*np.atleast_1d(seed).tolist(), index))
        for index, start in enumerate(range(0, count, chunk))
    ]


def tune_learning_rate(curves: Curves, name: str, batches: list, steps: int, grid=LEARNING_RATE_GRID) -> tuple[float, dict]:
    """The grid's learning rate with the lowest mean loss after `steps` updates on `batches`; and every rate's mean (inf: diverged)."""
    scores = {}
    for rate in grid:
        final = np.concatenate([curves.baseline(name, rate, batch, steps)[-1] for batch in batches])
        scores[rate] = float(final.mean()) if np.all(np.isfinite(final)) else math.inf
    best = min(scores, key=scores.get)
    return best, scores


def summarize_curve(curve: np.ndarray, steps: list[int]) -> list[dict]:
    """`{"steps", "mean", "ci95", "tasks"}` of `[steps + 1, problems]` losses at each of `steps`; mean and ci95 are None where a problem diverged."""
    entries = []
    for step in steps:
        values = curve[step]
        diverged = int(np.sum(~np.isfinite(values)))
        entry = {"steps": step, "tasks": int(values.size)}
        if diverged:
            entry.update(mean=None, ci95=None, diverged=diverged)
        else:
            mean, ci95 = summarize(values)
            entry.update(mean=mean, ci95=ci95)
        entries.append(entry)
    return entries


def mean_curve(curve: np.ndarray) -> list[float | None]:
    """The mean loss after each step, None where a problem diverged (JSON has no NaN)."""
    means = curve.mean(axis=1)
    return [float(value) if math.isfinite(value) else None for value in means]


def compare_optimizers(
    net,
    family,
    *,
    tuning_family=None,
    tasks: int,
    tuning_tasks: int,
    steps: list[int],
    tuning_steps: int,
    baselines=BASELINES,
    seed: int,
    chunk: int = 128,
    tuned: dict[str, float] | None = None,
) -> dict:
    """The learned optimizer against every baseline on `tasks` held-out problems of `family`.

    Baselines' learning rates come from `tuned` where given, else are tuned on
    `tuning_tasks` problems of `tuning_family` (the training family) at
    `tuning_steps`. Returns the metrics of DESIGN.md's learned-optimizer runs:
    `{"metric", "evaluation", "baselines", "curves"}`.
    """
    horizon = max(steps)
    held_out = sample_batches(family, tasks, (seed, 0x7465), chunk)
    curves = Curves(family)
    learned = np.concatenate([curves.learned(net, batch, horizon) for batch in held_out], axis=1)
    result = {"metric": "loss", "evaluation": summarize_curve(learned, steps), "baselines": {}, "curves": {"learned": mean_curve(learned)}}
    tuning_curves = Curves(tuning_family or family)
    tuning = None
    for name in baselines:
        if tuned and name in tuned:
            rate, scores = tuned[name], None
        else:
            tuning = tuning or sample_batches(tuning_family or family, tuning_tasks, (seed, 0x74756E), chunk)
            rate, scores = tune_learning_rate(tuning_curves, name, tuning, tuning_steps)
        curve = np.concatenate([curves.baseline(name, rate, batch, horizon) for batch in held_out], axis=1)
        entry = {"learning_rate": rate, "evaluation": summarize_curve(curve, steps)}
        if scores is not None:
            entry["tuning"] = {
                "steps": tuning_steps,
                "tasks": tuning_tasks,
                "mean_loss": {f"{r:g}": s if math.isfinite(s) else None for r, s in scores.items()},
            }
        result["baselines"][name] = entry
        result["curves"][name] = mean_curve(curve)
    return result
