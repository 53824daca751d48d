"""A sweep recipe checked against the recipe it tunes, when it is validated.

The tuned recipe is loaded with each end of every distribution (and every
choice) set through `--set`, as the trials will set it, so that a field path
that is not a field, or a value that the field refuses, is found before any
trial runs, and reported at `space.<path>` of the sweep recipe.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import RecipeError
from workbench.sweep import objective, space

TUNABLE = ("transfer", "meta")


def sweep_problems(sweep) -> list[tuple[tuple, str, Any]]:
    """(field path in the sweep recipe, message, value received) for each problem found; empty when the sweep is sound."""
    from workbench.recipe.loader import load_recipe

    try:
        tuned = load_recipe(sweep.recipe)
    except RecipeError as error:
        return [(("recipe",), f"the recipe to tune is invalid: {error.problems[0]}", sweep.recipe)]
    if tuned.kind not in TUNABLE:
        return [(("recipe",), f"a sweep tunes a transfer or meta recipe; this is a {tuned.kind} recipe", sweep.recipe)]
    found = objective.problems(sweep.objective, tuned)
    for path, entry in sweep.space.items():
        problem = _space_problem(sweep.recipe, tuned, path, entry, load_recipe)
        if problem:
            found.append((("space", path), *problem))
    return found


def _space_problem(recipe_path: str, tuned, path: str, entry, load_recipe) -> tuple[str, Any] | None:
    for label, value in space.candidates(entry):
        try:
            load_recipe(recipe_path, [space.assignment(path, value)])
        except RecipeError as error:
            problem = error.problems[0]
            if problem.message.startswith("unknown field") or "out of range" in problem.message or "is a list" in problem.message:
                return f"not a field of {tuned.kind} recipe {tuned.name}: {problem.field}: {problem.message}", path
            return f"{label} {space.yaml_text(value)} does not fit: {problem.field}: {problem.message}", value
    return None
