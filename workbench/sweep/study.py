"""A sweep's Optuna study: its storage, sampler and pruner, made once and loaded by every worker.

The storage is an SQLite file in the sweep's run directory unless the sweep
was started with `--storage URL` (recorded in its manifest, so that workers
that join find it). Workers beat a heartbeat while they run a trial; a trial
whose heartbeat stops (its worker was killed) is failed by the next worker
that looks, and run again once, never counted as done.
"""

from __future__ import annotations

import warnings

from workbench import runs
from workbench.sweep import space

HEARTBEAT_SECONDS = 2
GRACE_SECONDS = 6  # a trial whose heartbeat is older is stale: its worker is gone
RETRIES = 1
SQLITE_TIMEOUT_SECONDS = 60  # how long a worker waits for another's write to the file


def storage_url(run: runs.Run) -> str:
    """The study's database: the one the sweep started with, or study.db in its run directory."""
    return run.manifest.get("storage") or f"sqlite:///{run.file(runs.STUDY_FILE).resolve()}"


def open_storage(url: str):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") else None,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES),
        )


def load_study(sweep, run: runs.Run, storage, seed: int):
    """The sweep's study (made on first use), named after its run directory, with a sampler seeded by `seed`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own progress
    return optuna.create_study(
        storage=storage,
        study_name=run.path.name,
        sampler=_sampler(sweep, seed),
        pruner=_pruner(sweep),
        direction=sweep.objective.direction,
        load_if_exists=True,
    )


def _sampler(sweep, seed: int):
    import optuna

    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "cmaes":  # choices it cannot model are sampled at random, without a warning per trial
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(sweep))


def startup_trials(sweep) -> int:
    """Trials sampled at random before TPE models the results, and before pruning compares with them: a fifth, 1 to 10."""
    return max(1, min(10, sweep.trials // 5))


def _pruner(sweep):
    import optuna

    if sweep.pruning == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials(sweep))
    if sweep.pruning == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def distributions(sweep) -> dict:
    return space.distributions(sweep.space)
