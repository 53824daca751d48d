"""What a report reads from a run directory, checked once: manifest, history, metrics, recipe, evaluation.

Everything after `read_run` trusts these types. A folder that is not a run, a
kind the report does not draw, a run with no history (it failed or was stopped
before its first epoch or logged meta-iteration) and an unreadable file are
`RunError`s of one line.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from workbench import runs
from workbench.errors import RunError
from workbench.listing import RunSummary, read_json, summarize
from workbench.recipe.schema import LEARNED_OPTIMIZER

KINDS = ("transfer", "meta")
PHASE_COLUMN = "phase"


@dataclasses.dataclass
class RunFiles:
    """The files of one run, as plain Python values."""

    path: Path
    summary: RunSummary
    manifest: dict[str, Any]
    metrics: dict[str, Any]  # empty when the run stopped before writing it
    # One row per epoch or logged meta-iteration (none for a learned optimizer); `phase` a string, the rest floats.
    history: list[dict[str, Any]]
    recipe: dict[str, Any]  # the resolved recipe.yaml as plain YAML
    recipe_text: str
    evaluation: dict[str, Any] | None  # what `workbench evaluate` wrote, if it ran

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        return self.summary.kind

    def column(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """`(row, value)` for each history row that has column `name`."""
        return [(row, row[name]) for row in self.history if name in row]


def is_learned_optimizer(recipe: dict[str, Any]) -> bool:
    return recipe.get("kind") == "meta" and recipe.get("algorithm") == LEARNED_OPTIMIZER


def _optional_json(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def _history(run_path: Path, summary: RunSummary) -> list[dict[str, Any]]:
    path = run_path / runs.HISTORY_FILE
    unit = "epoch" if summary.kind == "transfer" else "logged meta-iteration"
    if not path.is_file():
        if summary.status == "failed":
            raise RunError(
                f"{run_path}: failed before its first {unit} ({summary.reason}); nothing to draw. Fix that and run the recipe again"
            )
        if summary.status == "running":
            raise RunError(f"{run_path}: has no {runs.HISTORY_FILE} yet; wait for its first {unit} and make the report again")
        raise RunError(f"{run_path}: has no {runs.HISTORY_FILE} ({summary.status} before its first {unit}); nothing to draw")
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RunError(f"{path}: unreadable history ({error}); the run directory is damaged") from None
    if not rows or PHASE_COLUMN not in rows[0]:
        raise RunError(
            f"{path}: unreadable history (expected a header with a `{PHASE_COLUMN}` column and one row per {unit}); the run directory is damaged"
        )
    parsed = []
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise RunError(f"{path}:{line}: unreadable history (this row has a different number of fields than the header)")
        values: dict[str, Any] = {PHASE_COLUMN: row[PHASE_COLUMN]}
        for column, text in row.items():
            if column == PHASE_COLUMN or text == "":
                continue
            try:
                values[column] = float(text)
            except ValueError:
                raise RunError(f"{path}:{line}: unreadable history (column {column} holds {text!r}, not a number)") from None
        parsed.append(values)
    return parsed


def _recipe(run_path: Path) -> tuple[dict[str, Any], str]:
    path = run_path / runs.RECIPE_FILE
    try:
        text = path.read_text()
        recipe = yaml.safe_load(text)
    except OSError as error:
        raise RunError(f"{path}: cannot read this file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise RunError(f"{path}: not valid YAML ({str(error).splitlines()[0]}); the run directory is damaged") from None
    if not isinstance(recipe, dict):
        raise RunError(f"{path}: expected a resolved recipe (a mapping); the run directory is damaged")
    return recipe, text


def read_run(path: Path) -> RunFiles:
    """The files of run directory `path`, checked; raises `RunError` (one line) when there is nothing to draw."""
    path = Path(path)
    summary = summarize(path)
    if summary.kind not in KINDS:
        raise RunError(f"{path}: a {summary.kind} run; `workbench report` draws {' and '.join(KINDS)} runs")
    manifest = read_json(path / runs.MANIFEST_FILE)
    recipe, recipe_text = _recipe(path)
    # A learned optimizer logs no history: its training record and curves are all in metrics.json.
    history = [] if is_learned_optimizer(recipe) else _history(path, summary)
    return RunFiles(
        path=path,
        summary=summary,
        manifest=manifest,
        metrics=_optional_json(path / runs.METRICS_FILE) or {},
        history=history,
        recipe=recipe,
        recipe_text=recipe_text,
        evaluation=_optional_json(path / runs.EVALUATION_FILE),
    )
