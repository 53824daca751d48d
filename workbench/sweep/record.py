"""sweep.json: every trial of a sweep (parameters, objective, state, run directory, source) and the best one.

Rewritten from the study, atomically, after every trial by the worker that ran
it, so that it always matches the study as some moment saw it.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench import runs
from workbench.sweep import space

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
SURPLUS = "surplus"  # user attribute of a trial asked for after the sweep had all its trials: never run, left out


def sweep_record(sweep, study) -> dict:
    """The content of sweep.json."""
    trials = [_trial_entry(sweep, trial) for trial in study.get_trials(deepcopy=False) if not trial.user_attrs.get(SURPLUS)]
    done = [entry for entry in trials if entry["state"] == "complete"]
    best = None
    if done:
        pick = max if sweep.objective.direction == "maximize" else min
        chosen = pick(done, key=lambda entry: entry["value"])
        best = {key: chosen[key] for key in ("trial", "value", "params", "run")}
    return {
        "objective": sweep.objective.model_dump(mode="json"),
        "trials_requested": sweep.trials,
        "best": best,
        "trials": [{key: value for key, value in entry.items() if key != "trial"} for entry in trials],
        "warm_start": study.user_attrs.get("warm_start", []),
    }


def _trial_entry(sweep, trial) -> dict:
    entry = {
        "trial": trial.number,
        "number": trial.number,
        "state": STATES.get(trial.state.name, trial.state.name.lower()),
        "value": trial.value if trial.state.name == "COMPLETE" else None,
        "params": space.recipe_values(sweep.space, trial.params),
        "run": trial.user_attrs.get("run"),
        "source": trial.user_attrs.get("source", "sampler"),
        "steps": max(trial.intermediate_values, default=None),
    }
    retry_of = trial.system_attrs.get("failed_trial")
    if retry_of is not None:
        entry["retry_of"] = retry_of
    if trial.user_attrs.get("error"):
        entry["error"] = trial.user_attrs["error"]
    return entry


def write(run: runs.Run, sweep, study) -> dict:
    record = sweep_record(sweep, study)
    run.write_json(runs.SWEEP_FILE, record)
    return record


def format_result(run_path: Path) -> str:
    """The end of a sweep in a few lines: trials by state, the best trial, its parameters, value and run."""
    record = json.loads((Path(run_path) / runs.SWEEP_FILE).read_text())
    states: dict[str, int] = {}
    for trial in record["trials"]:
        states[trial["state"]] = states.get(trial["state"], 0) + 1
    counts = ", ".join(f"{count} {state}" for state, count in states.items())
    lines = [f"sweep: {len(record['trials'])} trials ({counts})"]
    best = record["best"]
    if best is None:
        lines.append("no trial completed")
    else:
        lines.append(f"best: trial {best['trial']}, {record['objective']['metric']} = {best['value']:.4g}")
        lines += [f"  {path}: {space.yaml_text(value)}" for path, value in best["params"].items()]
        lines.append(f"  run: {best['run']}")
    return "\n".join(lines)
