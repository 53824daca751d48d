"""Run a validated recipe: make its run directory, dispatch by kind, record the outcome."""

from __future__ import annotations

import traceback
from pathlib import Path

from workbench.recipe import to_yaml
from workbench.runs import Run, latest_finished


def run_recipe(recipe, recipe_path: Path, runs_dir: Path) -> Path:
    """Train `recipe` in a new run directory under `runs_dir`; return that directory."""
    recipe_yaml = to_yaml(recipe)
    run = Run.create(runs_dir, recipe.name)
    run.start(recipe, recipe_yaml)
    try:
        if recipe.kind == "transfer":
            from workbench.transfer import train_transfer

            train_transfer(recipe, run, runs_dir=Path(runs_dir))
        else:
            from workbench.meta.runner import train_meta

            train_meta(recipe, run, runs_dir=Path(runs_dir))
    except KeyboardInterrupt:
        run.mark("interrupted")
        raise
    except BaseException as error:
        run.mark("failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        raise
    run.mark("finished")
    return run.path


def run_or_reuse(recipe_path: Path, runs_dir: Path) -> Path:
    """The latest finished run of the recipe at `recipe_path`, running it first if there is none.

    Used by `base: {source: recipe}`: a run is reused only when its resolved
    recipe is identical to this one's, so a changed recipe is run again.
    """
    from workbench.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    found = latest_finished(runs_dir, to_yaml(recipe))
    if found is not None:
        return found.path
    return run_recipe(recipe, recipe_path, runs_dir)
