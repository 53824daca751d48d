"""The listener a sweep sets around a trial's run: reports each step to Optuna and prunes when Optuna says so.

Steps are epochs counted over the whole schedule (transfer) or
meta-validations (meta), from 1; the value is the one `objective.step_key`
names, in the objective's direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from workbench.progress import Pruned


class PruningListener:
    """Reports `values[key]` at each step to `trial`; raises `Pruned` when the study's pruner stops the trial."""

    def __init__(self, trial, key: str):
        self.trial, self.key = trial, key
        self.steps = 0

    def __call__(self, step: int, values: Mapping[str, float]) -> None:
        self.steps = step
        value = values.get(self.key)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise Pruned(step)
