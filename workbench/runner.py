"""Run a validated recipe: make its run directory, dispatch by kind, record the outcome; resume one."""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import signal
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from workbench import devices, interrupts, progress
from workbench.errors import ModelError, RunError
from workbench.interrupts import Interrupted
from workbench.precision import precision_policy
from workbench.progress import Pruned
from workbench.recipe import load_recipe, to_yaml
from workbench.recipe.loader import recipe_problem
from workbench.runs import RECIPE_FILE, Run, latest_finished, still_running

log = logging.getLogger(__name__)


def run_recipe(
    recipe, recipe_path: Path, runs_dir: Path, overrides: tuple[str, ...] = (), storage: str | None = None, labels: dict | None = None
) -> Path | None:
    """Train `recipe` in a new run directory under `runs_dir`; return that directory.

    A sweep recipe runs its trials instead, its study in `storage` (a database
    URL; default: an SQLite file in its run directory). `labels` are recorded
    in the manifest (a sweep names itself and the trial there).

    A `source: recipe` base is found among the finished runs under `runs_dir`,
    or trained there first, before this run seeds its random state or enters
    its distribution strategy. Under `distribute: multi_worker`, only the chief
    writes a run directory; the other workers train alongside it in a temporary
    one (their base runs too) and return None.
    """
    if recipe.kind == "compare":
        return _run_comparison(recipe, recipe_path, runs_dir, overrides)
    if recipe.kind == "sweep":
        return _run_sweep(recipe, recipe_path, runs_dir, overrides, storage)
    with interrupts.stop_signals():
        strategy = devices.strategy_for(recipe.distribute)
        chief = devices.is_chief(strategy)
        folder = Path(runs_dir) if chief else _worker_scratch()
        base_run = _find_or_train_base(recipe, Path(runs_dir), folder)
        run = Run.create(folder, recipe.name)
        run.start(
            recipe,
            to_yaml(recipe),
            recipe_path=Path(recipe_path).resolve(),
            overrides=list(overrides),
            base_run=str(base_run.resolve()) if base_run else None,
            distribute={"strategy": recipe.distribute.strategy, "replicas": strategy.num_replicas_in_sync},
            **(labels or {}),
        )
        try:
            _execute(recipe, run, lambda: _train(recipe, run, strategy, base_run, resuming=False))
        except ModelError as error:
            if error.field is None:
                raise
            raise recipe_problem(recipe_path, (*_base_field(recipe), *error.field), str(error), overrides) from None
        return run.path if chief else None


def _run_comparison(recipe, recipe_path: Path, runs_dir: Path, overrides: tuple[str, ...]) -> Path:
    """A compare recipe's run directory; its entrants train in their own, beside it, on their own strategies."""
    from workbench.compare.runner import compare, prepare

    with interrupts.stop_signals():
        prepared = prepare(recipe, Path(recipe_path), overrides)  # refuses leakage before any directory exists
        run = Run.create(Path(runs_dir), recipe.name)
        run.start(recipe, to_yaml(recipe), recipe_path=Path(recipe_path).resolve(), overrides=list(overrides))
        _execute(recipe, run, lambda: compare(recipe, run, prepared))
        return run.path


def _run_sweep(recipe, recipe_path: Path, runs_dir: Path, overrides: tuple[str, ...], storage: str | None) -> Path:
    """A sweep's run directory holds its study and sweep.json; this process is its first worker."""
    from workbench.sweep.worker import start_sweep, work

    with interrupts.stop_signals():
        run = Run.create(Path(runs_dir), recipe.name)
        run.start(recipe, to_yaml(recipe), recipe_path=Path(recipe_path).resolve(), overrides=list(overrides), storage=storage)
        _execute(recipe, run, lambda: work(recipe, run, start_sweep(recipe, run, Path(runs_dir))))
        return run.path


def join_sweep(run_path: Path) -> Path:
    """Add this process as a worker to the study of the sweep run at `run_path`; return that directory."""
    with interrupts.stop_signals():
        run = Run.open(run_path)
        return _join(run, run.load_recipe())


def _join(run: Run, recipe) -> Path:
    from workbench.sweep.worker import join_study, work

    if recipe.kind != "sweep":
        raise RunError(f"{run.path}: a {recipe.kind} run, not a sweep; `workbench sweep join` takes a sweep's run directory")
    _execute(recipe, run, lambda: work(recipe, run, join_study(recipe, run)))
    return run.path


def _base_field(recipe) -> tuple[str, ...]:
    return ("base",) if recipe.kind == "transfer" else ("model", "base")


def _base_section(recipe):
    section = recipe
    for name in _base_field(recipe):
        section = getattr(section, name, None)  # a learned-optimizer recipe has no model, hence no base
    return section


def _find_or_train_base(recipe, lookup: Path, folder: Path) -> Path | None:
    """The finished run of a `source: recipe` base: the newest identical one under `lookup`, or one trained now in `folder`.

    A run is reused only when its resolved recipe is identical to the base
    recipe's, so a changed recipe is run again. None for other base sources.
    """
    base = _base_section(recipe)
    if base is None or base.source != "recipe":
        return None
    base_recipe = load_recipe(base.path)
    found = latest_finished(lookup, to_yaml(base_recipe))
    if found is not None:
        log.info("base: reusing %s (the finished run of %s)", found.path, base.path)
        return found.path
    log.info("base: training %s first", base.path)
    with progress.unheard():  # a sweep prunes a trial by its own epochs, not by its base's
        return run_recipe(base_recipe, Path(base.path), folder)


def _worker_scratch() -> Path:
    """A runs folder for a non-chief worker, deleted when the process exits (its base runs live there too)."""
    folder = Path(tempfile.mkdtemp(prefix="workbench-worker-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def resume_run(run_path: Path) -> Path | None:
    """Continue an unfinished run from its last resume point, on the base run it started with.

    Refused when the run has finished, or when its recipe file (with the same
    `--set` overrides) no longer resolves to the recipe the run started with.
    Under `multi_worker`, every worker resumes the chief's run directory: the
    others from a copy in a temporary folder, returning None.
    """
    with interrupts.stop_signals():
        return _resume(Run.open(run_path))


def _resume(run: Run) -> Path | None:
    manifest = run.manifest
    if manifest["status"] == "finished":
        raise RunError(f"{run.path}: already finished; nothing to resume")
    recipe = run.load_recipe()
    if recipe.kind == "sweep":  # its trials are in its study: resuming it is joining it again
        return _join(run, recipe)
    comparison = recipe.kind == "compare"
    base_run = None if comparison else _recorded_base(run, recipe)
    strategy = None if comparison else devices.strategy_for(recipe.distribute)
    chief = comparison or devices.is_chief(strategy)
    if chief and still_running(manifest):
        raise RunError(f"{run.path}: still running (process {manifest['process']['pid']}); stop it before resuming")
    source = Path(manifest.get("recipe_path", ""))
    if source.is_file():
        changes = _differences(recipe.model_dump(mode="json"), load_recipe(source, manifest.get("overrides", [])).model_dump(mode="json"))
        if changes:
            raise RunError(f"{source}: changed since {run.path.name} started ({'; '.join(changes[:5])}); run it anew with `workbench run`")
    if not chief:
        run = _worker_copy(run)
    if comparison:
        from workbench.compare.runner import compare, prepare

        prepared = prepare(recipe, source if source.is_file() else run.file(RECIPE_FILE), manifest.get("overrides", []))
        run.mark("running", resumed=manifest.get("resumed", 0) + 1)
        _execute(recipe, run, lambda: compare(recipe, run, prepared, resuming=True))
        return run.path
    run.mark("running", resumed=manifest.get("resumed", 0) + 1)
    _execute(recipe, run, lambda: _train(recipe, run, strategy, base_run, resuming=True))
    return run.path if chief else None


def _recorded_base(run: Run, recipe) -> Path | None:
    """The base run that `run` started on (runs from before the manifest recorded it: found again beside it)."""
    manifest = run.manifest
    if "base_run" not in manifest:
        return _find_or_train_base(recipe, run.path.parent, run.path.parent)
    if manifest["base_run"] is None:
        return None
    base_run = Path(manifest["base_run"])
    if not base_run.is_dir() or Run.open(base_run).manifest.get("status") != "finished":
        raise RunError(f"{run.path}: its base run {base_run} is gone or unfinished; run the recipe anew with `workbench run`")
    return base_run


def _worker_copy(run: Run) -> Run:
    """The chief's run directory copied for a non-chief worker to resume from; the chief alone writes the original.

    Consistent while the chief waits: it cannot write a new resume point
    before this worker joins its first training step. It does mark the run
    running meanwhile, through a hidden temporary file renamed into place:
    those are left out, since they vanish while the copy runs.
    """
    copy = _worker_scratch() / run.path.name
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("events.out.tfevents.*", ".*.tmp", ".*.tmp.*"))
    return Run.open(copy)


def _execute(recipe, run: Run, train: Callable[[], object]) -> None:
    """Seed, then `train()` in `run`; record how it ended in the manifest."""
    try:
        seed_everything(recipe.seed)
        train()
        interrupts.check()
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        run.mark("interrupted", signal=signal.Signals(signum).name)
        raise Interrupted(signum, run.path) from None
    except Pruned as pruned:
        run.mark("pruned", pruned_after=pruned.step)
        raise
    except BaseException as error:
        run.mark("failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        raise
    run.mark("finished")


def _train(recipe, run: Run, strategy, base_run: Path | None, resuming: bool) -> None:
    """Train a transfer or meta recipe with every variable created in `strategy`'s scope, computing in its precision."""
    with strategy.scope(), precision_policy(recipe.precision):
        if recipe.kind == "transfer":
            from workbench.transfer import train_transfer

            train_transfer(recipe, run, base_run=base_run, resuming=resuming)
        elif recipe.algorithm == "learned_optimizer":
            from workbench.learned.runner import train_learned_optimizer

            train_learned_optimizer(recipe, run)  # no resume points: a resumed run trains again, identically from its seed
        else:
            from workbench.meta.runner import train_meta

            train_meta(recipe, run, base_run=base_run, resuming=resuming)


def seed_everything(seed: int) -> None:
    """Start from a clean Keras state and `seed`: a run's figures must not depend on what ran before it in the process."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)


def _differences(before, after, path: str = "") -> list[str]:
    """`field.path: old -> new` for every value that differs between two plain structures."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            change
            for key in dict.fromkeys([*before, *after])
            for change in _differences(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [change for index, pair in enumerate(zip(before, after, strict=True)) for change in _differences(*pair, f"{path}.{index}")]
    if before != after:
        return [f"{path or 'recipe'}: {json.dumps(before)} -> {json.dumps(after)}"]
    return []
