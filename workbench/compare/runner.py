"""`kind: compare`: every entrant trained (or reused), then scored on the very same fixed episodes.

The order is fixed so that nothing is wasted or leaked: the episodes are built
and every entrant is checked for leakage before anything trains; entrants whose
recipe has an identical finished run reuse it; then each entrant adapts to every
episode and is scored after each step count. `compare.json` is rewritten after
each entrant, so a comparison that is stopped keeps what it measured, and
`workbench resume` continues it: finished entrants are not scored again, an
interrupted entrant run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench import runs
from workbench.compare.episodes import build_compare_episodes
from workbench.compare.leakage import check_leakage
from workbench.errors import RunError
from workbench.interrupts import Interrupted
from workbench.recipe import load_recipe, to_yaml
from workbench.recipe.loader import recipe_problem

log = logging.getLogger(__name__)

SCORING_CHUNK = 50  # episodes adapted per call: a progress step, and bounded memory


@dataclass
class Entrant:
    """One entrant, resolved: its recipe (and the file it came from) or finished run, and how it adapts."""

    name: str
    recipe: object
    recipe_path: Path | None  # None for a finished run named by the compare recipe
    run: Path | None
    adapt: object  # the recipe's `adapt` section, or None for the run's own way


def resolve_entrants(recipe, recipe_path: Path, test_classes=(), overrides=()) -> list[Entrant]:
    """Every entrant's recipe, checked for leakage against `test_classes`; nothing trains here.

    Raises:
        RecipeError: at `entrants.N.adapt` for an `adapt` section on a meta
            entrant, or where an entrant's recipe names data holding a test class.
    """
    entrants = []
    for index, entry in enumerate(recipe.entrants):
        if entry.recipe is not None:
            entrant_recipe, source, run_path = load_recipe(entry.recipe), Path(entry.recipe), None
        else:
            run = runs.Run.open(entry.run)
            if run.manifest.get("status") != "finished":
                raise RunError(f"{run.path}: entrant {entry.name!r} names a run that is {run.manifest.get('status')}, not finished")
            entrant_recipe, source, run_path = run.load_recipe(), run.file(runs.RECIPE_FILE), run.path
        if entry.adapt is not None and entrant_recipe.kind == "meta":
            raise recipe_problem(
                recipe_path,
                ("entrants", index, "adapt"),
                f"entrant {entry.name!r} is a meta recipe; it adapts with its own inner loop, so leave out adapt",
                overrides,
            )
        check_leakage(test_classes, entry.name, source, entrant_recipe)
        entrants.append(Entrant(entry.name, entrant_recipe, source if entry.recipe else None, run_path, entry.adapt))
    return entrants


@dataclass
class Prepared:
    """What a comparison is measured on: its episodes, their digest, and its entrants, checked."""

    episodes: object
    digest: str
    entrants: list[Entrant]


def prepare(recipe, recipe_path: Path, overrides=()) -> Prepared:
    """Build the episodes and check every entrant against their classes, before anything is written or trained."""
    episodes, digest, test_classes = build_compare_episodes(recipe)
    return Prepared(episodes, digest, resolve_entrants(recipe, recipe_path, test_classes, overrides))


def compare(recipe, run: runs.Run, prepared: Prepared, resuming: bool = False) -> dict:
    """Train what is missing, score every entrant, write `compare.json`; return its contents."""
    comparison = Comparison(recipe, run, prepared)
    if resuming:
        comparison.restore()
    return comparison.run_all()


class Comparison:
    """The entrants' results so far, by name, and `compare.json`, rewritten whenever one changes."""

    def __init__(self, recipe, run: runs.Run, prepared: Prepared):
        self.recipe, self.run = recipe, run
        self.episodes, self.digest, self.entrants = prepared.episodes, prepared.digest, prepared.entrants
        self.results: dict[str, dict] = {}

    def restore(self) -> None:
        """Take up what an interrupted comparison measured; refused if its episodes were others."""
        path = self.run.file(runs.COMPARE_FILE)
        found = json.loads(path.read_text()) if path.is_file() else {}
        if found.get("episodes_sha256") not in (None, self.digest):
            raise RunError(f"{self.run.path}: its episodes differ from those its recipe now gives; run the comparison anew")
        self.results = {entry["name"]: entry for entry in found.get("entrants", [])}

    def run_all(self) -> dict:
        for entrant in self.entrants:
            if "evaluation" in self.results.get(entrant.name, {}):
                log.info("%s: scored before the interruption", entrant.name)
                continue
            entrant_run = self._finished_run(entrant)
            log.info("%s: scoring %s on %d episodes", entrant.name, entrant_run, self.episodes.num_tasks)
            self.results[entrant.name] = score_entrant(
                entrant, entrant_run, self.episodes, list(self.recipe.evaluation.steps), self.recipe.seed
            )
            self.save()
        return self.save()

    def save(self) -> dict:
        entries = [self.results[entrant.name] for entrant in self.entrants if entrant.name in self.results]
        contents = {
            "metric": "mse" if self.recipe.tasks.source == "sinusoid" else "accuracy",
            "tasks": self.episodes.num_tasks,
            "episodes_sha256": self.digest,
            "complete": all("evaluation" in self.results.get(entrant.name, {}) for entrant in self.entrants),
            "entrants": entries,
        }
        self.run.write_json(runs.COMPARE_FILE, contents)
        return contents

    def _finished_run(self, entrant: Entrant) -> Path:
        """The entrant's finished run: named, reused, resumed after an interruption, or trained now beside the comparison."""
        from workbench.runner import resume_run, run_recipe

        if entrant.run is not None:
            return entrant.run
        started = self.results.get(entrant.name, {}).get("run")
        if started and runs.Run.open(started).manifest.get("status") != "finished":
            log.info("%s: resuming its run %s", entrant.name, started)
            return self._recording(entrant, lambda: resume_run(Path(started)))
        found = runs.latest_finished(self.run.path.parent, to_yaml(entrant.recipe))
        if found is not None:
            log.info("%s: reusing %s (the finished run of %s)", entrant.name, found.path, entrant.recipe_path)
            return found.path
        log.info("%s: training %s", entrant.name, entrant.recipe_path)
        return self._recording(entrant, lambda: run_recipe(entrant.recipe, entrant.recipe_path, self.run.path.parent))

    def _recording(self, entrant: Entrant, train) -> Path:
        """Run `train`; if it is interrupted, note the entrant's run so that resuming the comparison continues it."""
        try:
            return Path(train())
        except Interrupted as stop:
            if stop.run_path is not None:
                self.results[entrant.name] = {"name": entrant.name, "run": str(stop.run_path)}
                self.save()
            raise


def score_entrant(entrant: Entrant, run_path: Path, episodes, steps: list[int], seed: int) -> dict:
    """Adapt to every episode after each step count: mean, 95% interval and adaptation time per task."""
    import keras

    from workbench.adaptation import AdaptSettings, episode_scorer
    from workbench.meta.learner import summarize
    from workbench.runner import seed_everything

    seed_everything(seed)  # a new head's initialisation depends on nothing scored before it
    run = runs.Run.open(run_path)
    settings = None if entrant.adapt is None else AdaptSettings(**entrant.adapt.model_dump())
    scorer = episode_scorer(run, settings)
    evaluation = []
    for step in steps:
        values, seconds = [], 0.0
        bar = keras.utils.Progbar(episodes.num_tasks, unit_name="task", verbose=1 if sys.stderr.isatty() else 0)
        for start in range(0, episodes.num_tasks, SCORING_CHUNK):
            chunk = episodes.take(slice(start, start + SCORING_CHUNK))
            began = time.perf_counter()
            values.append(np.asarray(scorer.score(chunk, [step])[step]))
            seconds += time.perf_counter() - began
            bar.add(chunk.num_tasks)
        mean, ci95 = summarize(np.concatenate(values))
        evaluation.append(
            {
                "steps": step,
                "mean": float(mean),
                "ci95": float(ci95),
                "tasks": episodes.num_tasks,
                "adapt_seconds_per_task": seconds / episodes.num_tasks,
            }
        )
    return {
        "name": entrant.name,
        "kind": entrant.recipe.kind,
        "method": scorer.method if entrant.recipe.kind == "transfer" else entrant.recipe.algorithm,  # a meta run adapts by its algorithm
        "run": str(run.path),
        "training_cpu_seconds": training_cpu_seconds(run),
        "parameters": scorer.parameters,
        "evaluation": evaluation,
    }


def training_cpu_seconds(run: runs.Run) -> float | None:
    """CPU seconds (all threads) that training the run took, its base run's included; None where one was not recorded."""
    metrics = json.loads(run.file(runs.METRICS_FILE).read_text())
    seconds = metrics.get("training_cpu_seconds")
    base = run.manifest.get("base_run")
    if seconds is None or base is None:
        return seconds
    below = training_cpu_seconds(runs.Run.open(base))
    return None if below is None else seconds + below
