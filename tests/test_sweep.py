"""Sweeps: many workers on one study, a killed worker's trial run again, pruning, warm start, and recipe errors.

Every trial is a real run of a tiny transfer recipe (16x16 glyphs on conv4).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main
from workbench.recipe import load_recipe, to_yaml

TUNED = """\
kind: transfer
name: tiny
seed: 3
data: {{source: synthetic, name: glyphs, classes: {classes}, first_class: {first}, samples: 24, image_size: [{size}, {size}], channels: 1,
       validation: 0.25, test: 0.25, batch_size: 16}}
base: {{source: builtin, name: conv4}}
freeze: {{layers: none, batchnorm: train}}
schedule:
  - {{epochs: {epochs}, learning_rate: 3.0e-3}}
"""

SWEEP = """\
kind: sweep
name: {name}
seed: 1
recipe: tuned.yaml
objective: {{metric: test.loss, direction: minimize}}
space:
  schedule.0.learning_rate: {{log_uniform: [1.0e-9, 1.0e-2]}}
  head.dropout: {{uniform: [0.0, 0.5]}}
trials: {trials}
sampler: random
pruning: {pruning}
warm_start: {warm_start}
"""


def _write(folder, name="sweep", trials=2, pruning="none", warm_start="null", classes=4, first=0, size=16, epochs=1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuned.yaml").write_text(TUNED.format(classes=classes, first=first, size=size, epochs=epochs))
    path = folder / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, trials=trials, pruning=pruning, warm_start=warm_start))
    return path


def _new_sweep(path, runs_dir):
    """A sweep's run directory and study, with no trial run yet: what `workbench run` makes before its first trial."""
    from workbench.sweep.worker import start_sweep

    sweep = load_recipe(path)
    run = runs.Run.create(runs_dir, sweep.name)
    run.start(sweep, to_yaml(sweep), recipe_path=path.resolve())
    return sweep, run, start_sweep(sweep, run, runs_dir)


def _record(run_dir):
    return json.loads((run_dir / runs.SWEEP_FILE).read_text())


def _trial_manifests(run_dir):
    return [json.loads(path.read_text()) for path in sorted((run_dir / runs.TRIALS_DIR).glob(f"*/{runs.MANIFEST_FILE}"))]


def _join(run_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "sweep", "join", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_workers_on_one_sqlite_study_run_the_requested_trials_once_each(tmp_path):
    path = _write(tmp_path, trials=5)
    _, run, _ = _new_sweep(path, tmp_path / "runs")
    workers = [_join(run.path) for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    record = _record(run.path)
    assert [trial["state"] for trial in record["trials"]] == ["complete"] * 5
    manifests = _trial_manifests(run.path)
    assert sorted(manifest["sweep"]["trial"] for manifest in manifests) == [trial["number"] for trial in record["trials"]]
    assert len({manifest["process"]["pid"] for manifest in manifests}) == 2  # both workers ran trials
    assert record["best"]["value"] == min(trial["value"] for trial in record["trials"])
    assert runs.Run(run.path).manifest["status"] == "finished"


@pytest.mark.slow  # waits out the heartbeat's grace period; a worker process and three trials
def test_a_killed_workers_trial_is_failed_and_run_again_never_counted_done(tmp_path):
    import optuna

    from workbench.runner import join_sweep
    from workbench.sweep import study as studies

    path = _write(tmp_path, trials=2, epochs=30)  # long enough to be killed inside
    _, run, session = _new_sweep(path, tmp_path / "runs")
    worker = _join(run.path)
    deadline = time.monotonic() + 300
    while not any(trial.state.name == "RUNNING" for trial in session.study.get_trials()):
        assert worker.poll() is None and time.monotonic() < deadline, "the worker never started a trial"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    (killed,) = session.study.get_trials()
    (tmp_path / "tuned.yaml").write_text((tmp_path / "tuned.yaml").read_text().replace("epochs: 30", "epochs: 1"))
    started = time.monotonic()
    join_sweep(run.path)  # waits for the killed trial to go stale, then runs it again
    assert time.monotonic() - started >= studies.GRACE_SECONDS - studies.HEARTBEAT_SECONDS
    states = {trial.number: trial.state for trial in session.study.get_trials()}
    assert states[killed.number] == optuna.trial.TrialState.FAIL
    record = _record(run.path)
    done = [trial for trial in record["trials"] if trial["state"] == "complete"]
    assert len(done) == 2
    (retry,) = [trial for trial in record["trials"] if trial.get("retry_of") == killed.number]
    assert retry["state"] == "complete" and retry["params"] == killed.params


def test_pruning_stops_a_hopeless_trial_early_and_a_trial_does_not_depend_on_the_one_before(tmp_path):
    from workbench.sweep.worker import work

    path = _write(tmp_path, trials=3, pruning="median", epochs=4)
    sweep, run, session = _new_sweep(path, tmp_path / "runs")
    good = {"schedule.0.learning_rate": 3.0e-3, "head.dropout": 0.1}
    for params in (good, {"schedule.0.learning_rate": 1.0e-9, "head.dropout": 0.1}, good):
        session.study.enqueue_trial(params)
    work(sweep, run, session)
    first, hopeless, again = _record(run.path)["trials"]
    assert [first["state"], hopeless["state"], again["state"]] == ["complete", "pruned", "complete"]
    assert hopeless["steps"] < 4 and first["steps"] == 4
    assert runs.Run(hopeless["run"]).manifest["status"] == "pruned"
    epochs_run = len((runs.Run(hopeless["run"]).file(runs.HISTORY_FILE)).read_text().strip().splitlines()) - 1
    assert epochs_run == hopeless["steps"] < 4
    assert again["value"] == first["value"]  # same parameters, same figures, whatever ran before in the process


def test_warm_start_enqueues_the_best_of_the_nearest_dataset_first(tmp_path, caplog):
    from workbench.sweep.worker import work

    runs_dir = tmp_path / "runs"
    past = {"near": ({"classes": 4, "first": 0, "size": 16}, 2.0e-3), "far": ({"classes": 8, "first": 0, "size": 24}, 5.0e-4)}
    for name, (data, rate) in past.items():
        sweep, run, session = _new_sweep(_write(tmp_path / name, name=name, trials=1, **data), runs_dir)
        session.study.enqueue_trial({"schedule.0.learning_rate": rate, "head.dropout": 0.2})
        work(sweep, run, session)
    path = _write(tmp_path / "new", name="new", trials=1, warm_start="{neighbours: 1}", classes=4, first=40, size=16)
    with caplog.at_level("INFO"):
        sweep, run, session = _new_sweep(path, runs_dir)
    work(sweep, run, session)
    record = _record(run.path)
    (first,) = record["trials"]
    assert first["source"] == "warm_start"
    assert first["params"] == {"schedule.0.learning_rate": 2.0e-3, "head.dropout": 0.2}
    (drawn,) = record["warm_start"]
    assert drawn["dataset"] == "glyphs[0:4]" and drawn["distance"] >= 0
    assert "warm start: glyphs[0:4] at distance" in caplog.text


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "head.dropotu: {uniform: [0.0, 0.5]}",
            "space.head.dropotu: not a field of transfer recipe tiny: head.dropotu: unknown field; did you mean dropout?",
        ),
        (
            "head.dropout: {uniform: [0.0, 2.0]}",
            "space.head.dropout: high bound 2.0 does not fit: head.dropout: Input should be less than 1",
        ),
        (
            "schedule.3.epochs: {int: [1, 3]}",
            "space.schedule.3.epochs: not a field of transfer recipe tiny: schedule.3: index 3 is out of range",
        ),
        ("head.dropout: {log_uniform: [0.0, 0.5]}", "space.head.dropout: log_uniform needs a low bound above 0"),
        (
            "head.dropout: {uniform: [0.5, 0.1], choice: [0.1]}",
            "space.head.dropout: give exactly one of uniform, log_uniform, int or choice",
        ),
    ],
)
def test_validate_places_a_bad_space_entry_at_its_line_in_one_line(tmp_path, entry, expected):
    path = _write(tmp_path)
    text = path.read_text().replace("  head.dropout: {uniform: [0.0, 0.5]}", f"  {entry}")
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{path}:8:") and expected in line, line


def test_validate_refuses_an_objective_the_tuned_recipe_cannot_give_and_storage_on_other_kinds(tmp_path):
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("direction: minimize", "direction: maximize"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"{path}:5:43: objective.direction: loss is better lower; set direction: minimize"
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "tuned.yaml"), "--storage", "sqlite:///x.db", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2
    assert result.output.startswith("--storage holds a sweep's study; ") and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_dataset_distances_are_standardised_per_meta_feature_and_skip_those_that_do_not_vary():
    from workbench.data.meta_features import distances

    target, others = {"classes": 5.0, "channels": 1.0}, [{"classes": 6.0, "channels": 1.0}, {"classes": 20.0, "channels": 1.0}]
    near, far = distances(target, others)
    assert near < far
    scaled = distances({"classes": 5000.0, "channels": 1.0}, [{"classes": 6000.0, "channels": 1.0}, {"classes": 20000.0, "channels": 1.0}])
    assert scaled == pytest.approx([near, far])  # the unit of a feature does not matter


def test_a_trial_reports_its_own_epochs_only_not_those_of_the_base_it_trains_first(tmp_path):
    from workbench import progress
    from workbench.runner import run_recipe

    (tmp_path / "base.yaml").write_text(TUNED.format(classes=4, first=0, size=16, epochs=3))
    tuned = TUNED.format(classes=3, first=10, size=16, epochs=2).replace(
        "{source: builtin, name: conv4}", "{source: recipe, path: base.yaml}"
    )
    (tmp_path / "tuned.yaml").write_text(tuned)
    heard = []
    with progress.listening(lambda step, values: heard.append((step, values["val_accuracy"]))):
        run_dir = run_recipe(load_recipe(tmp_path / "tuned.yaml"), tmp_path / "tuned.yaml", tmp_path / "runs")
    lines = (run_dir / runs.HISTORY_FILE).read_text().splitlines()
    header = lines[0].split(",")
    own = [float(line.split(",")[header.index("val_accuracy")]) for line in lines[1:]]
    assert [step for step, _ in heard] == [1, 2]
    assert [value for _, value in heard] == pytest.approx(own)
