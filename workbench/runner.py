"""Run a validated recipe: make its run directory, dispatch by kind, record the outcome; resume one."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import traceback
from pathlib import Path

from workbench import devices
from workbench.errors import RunError
from workbench.recipe import to_yaml
from workbench.runs import Run, latest_finished, still_running


def run_recipe(recipe, recipe_path: Path, runs_dir: Path, overrides: tuple[str, ...] = ()) -> Path | None:
    """Train `recipe` in a new run directory under `runs_dir`; return that directory.

    Under `distribute: multi_worker`, only the chief writes a run directory;
    the other workers train alongside it in a temporary one and return None.
    """
    path, chief = _train_new_run(recipe, recipe_path, runs_dir, overrides)
    return path if chief else None


def _train_new_run(recipe, recipe_path: Path, runs_dir: Path, overrides: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """The new run's directory, and whether this process is the chief that keeps it."""
    strategy = devices.strategy_for(recipe.distribute)
    chief = devices.is_chief(strategy)
    run = Run.create(Path(runs_dir) if chief else _worker_scratch(), recipe.name)
    run.start(recipe, to_yaml(recipe), recipe_path=Path(recipe_path).resolve(), overrides=list(overrides))
    # Every worker looks up bases from other runs in `runs_dir` alike.
    _execute(recipe, run, Path(runs_dir), strategy, resume=False)
    return run.path, chief


def _worker_scratch() -> Path:
    """A runs folder for a non-chief worker, deleted when the process exits (its base runs live there too)."""
    folder = Path(tempfile.mkdtemp(prefix="workbench-worker-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def resume_run(run_path: Path) -> Path | None:
    """Continue an unfinished run from its last resume point.

    Refused when the run has finished, or when its recipe file (with the same
    `--set` overrides) no longer resolves to the recipe the run started with.
    Under `multi_worker`, every worker resumes the chief's run directory: the
    others from a copy in a temporary folder, returning None.
    """
    run = Run.open(run_path)
    manifest = run.manifest
    if manifest["status"] == "finished":
        raise RunError(f"{run.path}: already finished; nothing to resume")
    recipe = run.load_recipe()
    strategy = devices.strategy_for(recipe.distribute)
    chief = devices.is_chief(strategy)
    if chief and still_running(manifest):
        raise RunError(f"{run.path}: still running (process {manifest['process']['pid']}); stop it before resuming")
    source = Path(manifest.get("recipe_path", ""))
    if source.is_file():
        from workbench.recipe import load_recipe

        changes = _differences(recipe.model_dump(mode="json"), load_recipe(source, manifest.get("overrides", [])).model_dump(mode="json"))
        if changes:
            raise RunError(f"{source}: changed since {run.path.name} started ({'; '.join(changes[:5])}); run it anew with `workbench run`")
    if not chief:
        run = _worker_copy(run)
    run.mark("running", resumed=manifest.get("resumed", 0) + 1)
    _execute(recipe, run, Path(run_path).parent, strategy, resume=True)
    return run.path if chief else None


def _worker_copy(run: Run) -> Run:
    """The chief's run directory copied for a non-chief worker to resume from; the chief alone writes the original.

    Consistent while the chief waits: it cannot write a new resume point
    before this worker joins its first training step.
    """
    copy = _worker_scratch() / run.path.name
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("events.out.tfevents.*"))
    return Run.open(copy)


def _execute(recipe, run: Run, runs_dir: Path, strategy, resume: bool) -> None:
    """Train in `run`, every variable created in `strategy`'s scope; record how it ended in the manifest."""
    try:
        with strategy.scope():
            if recipe.kind == "transfer":
                from workbench.transfer import train_transfer

                train_transfer(recipe, run, runs_dir=runs_dir, resume=resume)
            else:
                from workbench.meta.runner import train_meta

                train_meta(recipe, run, runs_dir=runs_dir, resume=resume)
    except KeyboardInterrupt:
        run.mark("interrupted")
        raise
    except BaseException as error:
        run.mark("failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        raise
    run.mark("finished")


def _differences(before, after, path: str = "") -> list[str]:
    """`field.path: old -> new` for every value that differs between two plain structures."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            change
            for key in dict.fromkeys([*before, *after])
            for change in _differences(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        ]
    if before != after:
        return [f"{path or 'recipe'}: {json.dumps(before)} -> {json.dumps(after)}"]
    return []


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
    return _train_new_run(recipe, recipe_path, runs_dir)[0]
