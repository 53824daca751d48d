"""One sweep worker: asks the study for trials and runs each as an ordinary run, until the sweep has all of them.

Any number of workers share a study (`workbench run` starts the first,
`workbench sweep join` adds more). Together they run exactly `trials` trials:
a worker counts the trials complete, pruned or running before it asks for
another, and, since two workers can ask at once, checks after asking that
fewer than `trials` trials were taken before its own (trial numbers are given
out in order by the storage); a trial asked for too late is dropped unrun.
A running trial whose worker was killed is found stale by its heartbeat,
failed, and run again once (`study.RETRIES`); failed trials never count as
done. A worker with nothing left to ask for waits for the trials still
running, so that a stale one is retried. Each trial's run directory lies in
the sweep's `trials/` folder and its manifest names the sweep and the trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path

from workbench import progress, runs
from workbench.errors import TrainingError, WorkbenchError
from workbench.progress import Pruned
from workbench.sweep import objective, record, space, warm_start
from workbench.sweep import study as studies
from workbench.sweep.pruning import PruningListener

log = logging.getLogger(__name__)

COUNTED = ("COMPLETE", "PRUNED", "RUNNING")


@dataclasses.dataclass
class Session:
    """A worker's handle on the study: the study and the storage that beats its heartbeats."""

    study: object
    storage: object


def start_sweep(sweep, run: runs.Run, runs_dir: Path) -> Session:
    """Make the sweep's study (in its run directory unless the manifest names another storage); warm-start it if asked."""
    session = _open(sweep, run, seed=sweep.seed)
    if sweep.warm_start is not None:
        from workbench.recipe import load_recipe

        warm_start.enqueue(sweep, session.study, load_recipe(sweep.recipe), runs_dir, exclude=run.path)
    record.write(run, sweep, session.study)
    return session


def join_study(sweep, run: runs.Run) -> Session:
    """The study of an existing sweep, for one more worker (its sampler seeded apart from the other workers')."""
    return _open(sweep, run, seed=sweep.seed + os.getpid())


def _open(sweep, run: runs.Run, seed: int) -> Session:
    storage = studies.open_storage(studies.storage_url(run))
    return Session(studies.load_study(sweep, run, storage, seed), storage)


def work(sweep, run: runs.Run, session: Session) -> None:
    """Run trials until the sweep has `trials` complete or pruned ones; sweep.json is rewritten after each."""
    trials_dir = run.file(runs.TRIALS_DIR)
    trials_dir.mkdir(exist_ok=True)
    try:
        while (trial := _next_trial(sweep, session)) is not None:
            _run_trial(sweep, run, session, trial, trials_dir)
            _log_progress(sweep, record.write(run, sweep, session.study))
    finally:  # stopped too: the record shows the stopped trial failed, and its retry waiting
        record.write(run, sweep, session.study)


def _next_trial(sweep, session: Session):
    """The next trial this worker runs (enqueued ones first), or None once the sweep has all its trials."""
    study = session.study
    while True:
        _fail_stale(study)
        trials = [trial for trial in study.get_trials(deepcopy=False) if not trial.user_attrs.get(record.SURPLUS)]
        _refuse_endless_failures(sweep, trials)
        taken = [trial for trial in trials if trial.state.name in COUNTED]
        if len(taken) >= sweep.trials:
            if not any(trial.state.name == "RUNNING" for trial in taken):
                return None
            time.sleep(studies.HEARTBEAT_SECONDS)  # another worker's trial: wait for it, or for it to go stale
            continue
        with warnings.catch_warnings():
            # Optuna warns that heartbeats go with Study.optimize; this loop beats them itself (`_heartbeat`).
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = study.ask(studies.distributions(sweep))
        before = [
            other
            for other in study.get_trials(deepcopy=False)
            if other.number <= trial.number and other.state.name in COUNTED and not other.user_attrs.get(record.SURPLUS)
        ]
        if len(before) <= sweep.trials:
            return trial
        # Another worker asked at the same moment and got the last trial: drop this one unrun.
        trial.set_user_attr(record.SURPLUS, True)
        study.tell(trial, state=_state("FAIL"))


def _refuse_endless_failures(sweep, trials) -> None:
    failed = [trial for trial in trials if trial.state.name == "FAIL"]
    if len(failed) > sweep.trials:
        last = failed[-1].user_attrs.get("error", "its worker stopped")
        raise TrainingError(f"{len(failed)} trials of this sweep failed, more than the {sweep.trials} it runs; the last: {last}")


def _run_trial(sweep, run: runs.Run, session: Session, trial, trials_dir: Path) -> None:
    """Run one trial as an ordinary run and tell the study how it ended."""
    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    study = session.study
    source = trial.user_attrs.get("source") or "sampler"
    trial.set_user_attr("source", source)
    overrides = space.overrides(sweep.space, trial.params)
    log.info("sweep %s: trial %d (%s): %s", sweep.name, trial.number, source, " ".join(f"--set {o}" for o in overrides))
    labels = {"sweep": {"run": str(run.path.resolve()), "trial": trial.number}}
    state, value = "FAIL", None
    try:
        tuned = load_recipe(sweep.recipe, overrides)
        listener = PruningListener(trial, objective.step_key(sweep.objective, tuned))
        with _heartbeat(session.storage, trial._trial_id), progress.listening(listener):  # Optuna gives trials no public id
            path = run_recipe(tuned, Path(sweep.recipe), trials_dir, overrides, labels=labels)
        trial.set_user_attr("run", str(path.resolve()))
        value = objective.read(sweep.objective, json.loads((path / runs.METRICS_FILE).read_text()))
        state = "COMPLETE"
    except Pruned as pruned:
        log.info("sweep %s: trial %d pruned after step %d", sweep.name, trial.number, pruned.step)
        state = "PRUNED"
    except KeyboardInterrupt:
        _give_back(session, trial, trials_dir, run)
        raise
    except WorkbenchError as error:
        log.info("sweep %s: trial %d failed: %s", sweep.name, trial.number, error)
        trial.set_user_attr("error", str(error).splitlines()[0])
    except BaseException:
        _finish(study, trial, "FAIL", None, trials_dir, run)
        raise
    _finish(study, trial, state, value, trials_dir, run)


def _finish(study, trial, state: str, value: float | None, trials_dir: Path, run: runs.Run) -> None:
    if "run" not in trial.user_attrs:
        found = trial_run(trials_dir, run.path, trial.number)
        if found is not None:
            trial.set_user_attr("run", str(found))
    study.tell(trial, value if state == "COMPLETE" else None, state=_state(state))


def _give_back(session: Session, trial, trials_dir: Path, run: runs.Run) -> None:
    """A trial stopped by Ctrl-C or SIGTERM: failed, and queued again as a killed worker's would be."""
    import optuna

    _finish(session.study, trial, "FAIL", None, trials_dir, run)
    frozen = next(t for t in session.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=studies.RETRIES)(session.study, frozen)


def trial_run(trials_dir: Path, sweep_path: Path, number: int) -> Path | None:
    """The run directory whose manifest names this sweep and trial `number`, if the trial got as far as making one."""
    sweep_path = str(Path(sweep_path).resolve())
    for manifest_path in Path(trials_dir).glob(f"*/{runs.MANIFEST_FILE}"):
        try:
            labels = json.loads(manifest_path.read_text()).get("sweep") or {}
        except (OSError, ValueError):
            continue
        if labels.get("run") == sweep_path and labels.get("trial") == number:
            return manifest_path.parent.resolve()
    return None


def _state(name: str):
    import optuna

    return optuna.trial.TrialState[name]


def _fail_stale(study) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def _heartbeat(storage, trial_id: int):
    """Record the trial's heartbeat every few seconds while inside, from a thread, so that a stale one means a dead worker."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(studies.HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, name=f"sweep-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _log_progress(sweep, current: dict) -> None:
    done = [trial for trial in current["trials"] if trial["state"] in ("complete", "pruned")]
    best = current["best"]
    best_text = f"best so far {best['value']:.4g} (trial {best['trial']})" if best else "no trial complete yet"
    log.info("sweep %s: %d/%d trials done; %s", sweep.name, len(done), sweep.trials, best_text)
