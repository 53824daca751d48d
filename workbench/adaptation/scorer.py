"""`EpisodeScorer`: one finished run, adapted to each task of fixed episodes and scored on its query set.

Build one scorer per entrant (`episode_scorer`), then score as many episodes
as needed: models, compiled functions and optimizers are made once. A
transfer run adapts by `prototypes`, `head` or `finetune`
(`workbench.adaptation.transfer_methods`); a meta run by its own inner loop,
to any number of ways (`workbench.adaptation.any_way`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench import runs
from workbench.adaptation.settings import INNER_LOOP, PROTOTYPES, TRANSFER_METHODS, AdaptSettings
from workbench.errors import ArgumentError, DataError, RunError

TASKS_PER_CALL = 50  # tasks per compiled call; the last chunk is padded so that every call has the same shapes


class EpisodeScorer:
    """Adapts a finished run to each task of `Episodes` and scores its query set.

    Attributes:
        kind: "transfer" | "meta", the run's kind.
        method: "prototypes" | "head" | "finetune" | "inner_loop".
        input_shape: the shape of one example the run's model takes, e.g. `(H, W, C)`.
        parameters: the adapted model's parameters, its task head counted for
            the ways of the episodes scored last (before any: the run's own
            ways for meta runs, the base alone for transfer runs).
    """

    kind: str
    method: str
    input_shape: tuple
    regression = False  # regression tasks have no classes (sinusoid meta runs)

    def __init__(self):
        self._ways: int | None = None

    @property
    def parameters(self) -> int:
        return self.parameters_for(self._ways)

    def parameters_for(self, ways: int | None) -> int:
        """The adapted model's parameters for `ways`-way tasks (None: see `parameters`)."""
        raise NotImplementedError

    def score(self, episodes, steps: Sequence[int]) -> dict[int, np.ndarray]:
        """Per step count, the query accuracy of every task in `episodes` (float array `[B]`).

        Regression tasks (sinusoid meta runs) give the query MSE instead.
        Step 0 scores the model before any gradient step; `prototypes` takes
        none, so it gives the same figures at every count.
        """
        raise NotImplementedError

    def _check(self, episodes, steps) -> tuple[tuple[int, ...], int | None]:
        """The sorted step counts, and the tasks' ways (None for regression); raises on episodes the run cannot take."""
        steps = check_steps(steps)
        shape = tuple(int(d) for d in episodes.support_x.shape[2:])
        query_shape = tuple(int(d) for d in episodes.query_x.shape[2:])
        if shape != self.input_shape or query_shape != self.input_shape:
            raise DataError(
                f"the episodes hold examples of shape {shape} (query {query_shape}) but this {self.kind} run's model takes "
                f"{self.input_shape}; build the episodes at the run's image size and channels. Received: support_x.shape="
                f"{tuple(episodes.support_x.shape)}"
            )
        if self.regression:
            return steps, None
        self._ways = episode_ways(episodes)
        return steps, self._ways


def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """Step counts as a sorted tuple of distinct integers >= 0; an error names a bad one."""
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        steps = [steps]
    steps = list(steps)
    bad = [step for step in steps if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0]
    if bad or not steps:
        raise ArgumentError(f"Expected step counts: integers >= 0, at least one. Received: steps={steps!r}")
    return tuple(sorted({int(step) for step in steps}))


def episode_ways(episodes) -> int:
    """The tasks' number of classes N; every task's support set must hold each label `0..N-1`, its query set no other."""
    support_y = np.asarray(episodes.support_y)
    query_y = np.asarray(episodes.query_y)
    ways = int(support_y.max()) + 1
    labels = np.arange(ways)
    present = (support_y[..., None] == labels).any(axis=1)
    if support_y.min() < 0 or not present.all():
        task = int(np.argmin(present.all(axis=1))) if support_y.min() >= 0 else int(np.argmin(support_y.min(axis=1)))
        raise DataError(
            f"task {task} of the episodes does not label its support set 0..{ways - 1} with every label present; "
            f"episodes remap each task's classes to 0..N-1. Received: support_y[{task}]={support_y[task].tolist()}"
        )
    if query_y.min() < 0 or query_y.max() >= ways:
        raise DataError(
            f"the episodes' query labels must lie in 0..{ways - 1}, the support sets' classes. Received: {query_y.min()}..{query_y.max()}"
        )
    return ways


def chunks(count: int, size: int):
    """`(start, indices)` per call: `size` task indices each, the last chunk padded by repeating the last task."""
    size = min(size, count)
    for start in range(0, count, size):
        yield start, np.minimum(np.arange(start, start + size), count - 1)


def finished_run(path) -> runs.Run:
    """The finished run at `path`; an error says what it is instead."""
    run = runs.Run.open(path)
    manifest = run.manifest
    if manifest.get("status") != "finished":
        raise RunError(
            f"{run.path}: the run is {manifest.get('status')}, not finished; adapt a finished run "
            f"(continue this one with `workbench resume {run.path}`)"
        )
    if manifest.get("kind") not in ("transfer", "meta"):
        raise RunError(f"{run.path}: a {manifest.get('kind')} run holds no model to adapt; pass a transfer or meta run")
    return run


def episode_scorer(run: runs.Run, settings: AdaptSettings | None) -> EpisodeScorer:
    """The scorer of a finished run: `settings=None` adapts the run's own way (meta: inner loop; transfer: prototypes)."""
    run = finished_run(run.path if isinstance(run, runs.Run) else run)
    kind = run.manifest["kind"]
    if kind == "meta":
        if settings is not None and (settings.method != INNER_LOOP or settings.learning_rate is not None):
            raise ArgumentError(
                f"{run.path}: a meta run adapts with its own inner loop (its steps and rates); "
                f"method {INNER_LOOP} and no learning rate. Received: {settings}"
            )
        from workbench.adaptation.any_way import MetaScorer

        return MetaScorer(run)
    settings = settings or AdaptSettings(PROTOTYPES)
    if settings.method not in TRANSFER_METHODS:
        raise ArgumentError(f"{run.path}: a transfer run adapts by {', '.join(TRANSFER_METHODS)}. Received: method={settings.method!r}")
    from workbench.adaptation.transfer_methods import TransferScorer

    return TransferScorer(run, settings)
