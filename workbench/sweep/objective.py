"""The figure a sweep optimises: where it is in a trial's metrics.json, and which value trains toward it.

Transfer: `test.accuracy`, `test.loss`, `phases.N.val_accuracy` or
`phases.N.val_loss`. Meta: `meta_test`, the mean of the meta-test entry with
`steps` steps. The value reported at each pruning step (an epoch, a
meta-validation) is the validation figure of the same kind: `val_accuracy`
for an accuracy objective, `val_loss` for a loss, `val_mse` for sinusoids;
the phases' own monitors may watch something else.
"""

from __future__ import annotations

import re
from typing import Any

from workbench.errors import RunError

TRANSFER_METRIC = re.compile(r"^(?:test\.(accuracy|loss)|phases\.(\d+)\.val_(accuracy|loss))$")
META_METRIC = "meta_test"
TRANSFER_CHOICES = "test.accuracy, test.loss, phases.N.val_accuracy or phases.N.val_loss"
HIGHER_IS_BETTER = {"accuracy": True, "loss": False, "mse": False}


def measure(objective, recipe) -> str:
    """accuracy, loss or mse: what the objective measures in `recipe`."""
    if recipe.kind == "meta":
        return "mse" if recipe.tasks.source == "sinusoid" else "accuracy"
    found = TRANSFER_METRIC.match(objective.metric)
    return found.group(1) or found.group(3)


def step_key(objective, recipe) -> str:
    """The logged value that each pruning step reports."""
    return f"val_{measure(objective, recipe)}"


def problems(objective, recipe) -> list[tuple[tuple, str, Any]]:
    """What is wrong with `objective` for the tuned `recipe`, as (field path under the sweep, message, value)."""
    if recipe.kind == "meta":
        found = _meta_problems(objective, recipe)
    else:
        found = _transfer_problems(objective, recipe)
    if found:
        return found
    natural = "maximize" if HIGHER_IS_BETTER[measure(objective, recipe)] else "minimize"
    if objective.direction != natural:
        return [
            (
                ("objective", "direction"),
                f"{measure(objective, recipe)} is better {'higher' if natural == 'maximize' else 'lower'}; set direction: {natural}",
                objective.direction,
            )
        ]
    return []


def _meta_problems(objective, recipe) -> list:
    if objective.metric != META_METRIC:
        return [
            (
                ("objective", "metric"),
                f"a meta recipe is scored by {META_METRIC} (the meta-test mean); set metric: {META_METRIC}",
                objective.metric,
            )
        ]
    steps = recipe.evaluation.steps
    if objective.steps is None and len(steps) > 1:
        return [(("objective", "steps"), f"the recipe reports the meta-test after {steps} steps; pick one with steps: N", None)]
    if objective.steps is not None and objective.steps not in steps:
        return [(("objective", "steps"), f"the recipe reports the meta-test after {steps} steps only", objective.steps)]
    return []


def _transfer_problems(objective, recipe) -> list:
    if objective.steps is not None:
        return [(("objective", "steps"), "steps picks a meta-test entry; transfer objectives take none", objective.steps)]
    found = TRANSFER_METRIC.match(objective.metric)
    if found is None:
        return [(("objective", "metric"), f"a transfer recipe is scored by {TRANSFER_CHOICES}", objective.metric)]
    data = recipe.data
    if found.group(1):
        has_test = data.splits.test is not None if data.source == "tfds" else data.test > 0
        if not has_test:
            return [
                (
                    ("objective", "metric"),
                    "the recipe's data has no test split; give it one (data.test) or use phases.N.val_accuracy",
                    objective.metric,
                )
            ]
        return []
    phase = int(found.group(2))
    if phase >= len(recipe.schedule):
        return [(("objective", "metric"), f"the schedule has {len(recipe.schedule)} phase(s), numbered from 0", objective.metric)]
    has_validation = data.splits.validation is not None if data.source == "tfds" else data.validation > 0
    if not has_validation:
        return [(("objective", "metric"), "the recipe's data has no validation split; give it one (data.validation)", objective.metric)]
    return []


def read(objective, metrics: dict) -> float:
    """The objective's value in a finished trial's metrics."""
    try:
        if objective.metric == META_METRIC:
            entries = metrics["evaluation"]
            entry = entries[0] if objective.steps is None else next(e for e in entries if e["steps"] == objective.steps)
            return float(entry["mean"])
        value: Any = metrics
        for part in objective.metric.split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        return float(value)
    except (KeyError, IndexError, StopIteration, TypeError, ValueError):
        raise RunError(f"metrics.json holds no {objective.metric}; the trial's run is incomplete") from None
