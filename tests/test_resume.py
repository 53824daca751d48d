"""Runs survive SIGKILL, Ctrl-C and SIGTERM: a stopped run resumes from where it was, to the figures of an uninterrupted run.

The kills wait for a resume point chosen at random strictly inside the run (or for
the scratch baseline to be training), so they never race the end of the run, and
the resumed process must say that it starts past that point: a resume that
retrained from scratch (runs are deterministic) would reach the same figures.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from workbench import callbacks, interrupts, resume, runs
from workbench.cli import main
from workbench.interrupts import Interrupted

# Early stopping in the fine-tune phase, and a scratch baseline after the phases.
TRANSFER = """\
kind: transfer
name: killed-transfer
seed: 3
data: {source: synthetic, name: glyphs, classes: 4, samples: 40, image_size: [16, 16], channels: 1, validation: 0.25, test: 0.25, batch_size: 8,
       augment: {rotation: 0.05}}
base: {source: builtin, name: conv4}
freeze: {layers: {last: 8}, batchnorm: frozen}
head: {dropout: 0.3}
schedule:
  - {name: head, epochs: 4, learning_rate: 3.0e-3, lr_schedule: cosine, warmup_epochs: 1}
  - {name: fine-tune, unfreeze: all, epochs: 6, learning_rate: 1.0e-3, early_stopping: {patience: 2}}
baseline: scratch
"""

META = """\
kind: meta
name: killed-meta
algorithm: maml
seed: 5
tasks: {source: sinusoid, shots: 5, queries: 5}
model: {builtin: mlp}
inner: {steps: 1, learning_rate: 0.01}
outer: {meta_batch_size: 10, iterations: 6000}
evaluation: {tasks: 50, steps: [1, 3], every: 1000, validation_tasks: 20}
"""

ENVIRONMENT = {**os.environ, "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
TIMEOUT = 600


def _workbench(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *map(str, args)],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )


def _as_from_a_terminal():
    """SIGINT as a command typed at a terminal gets it: CI may start the tests with SIGINT ignored, as for a background job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(process):
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err[-3000:]
    return out, err


def _final_figures(run_dir):
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    if "phases" in metrics:
        figures = [metrics["test"]["loss"], metrics["test"]["accuracy"]] + [phase["val_loss"] for phase in metrics["phases"]]
        return figures + [metrics["baseline"]["scratch"]["test"]["accuracy"]]
    return [entry["mean"] for entry in metrics["evaluation"]] + [metrics["best_validation"]["mean"]]


def _resume_state(runs_dir):
    for path in runs_dir.glob(f"*/{runs.CHECKPOINTS_DIR}/resume.json"):
        try:
            return json.loads(path.read_text())
        except ValueError:  # renamed into place between the glob and the read: read the next one
            return None
    return None


def _wait_for(process, condition, what):
    deadline = time.time() + TIMEOUT
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"no {what} within {TIMEOUT} s"
        time.sleep(0.02)


def _kill_and_resume(recipe, runs_dir, condition, what):
    """Start a run, SIGKILL it once `condition(runs_dir)` holds, resume it; the resumed process's stderr."""
    process = _workbench("run", recipe, "--runs-dir", runs_dir)
    _wait_for(process, lambda: condition(runs_dir), what)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = runs_dir.iterdir()
    # SIGKILL leaves no chance to write anything: the manifest still says running.
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "running", "the kill came after the run finished"
    _, err = _finish(_workbench("resume", run_dir))
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "finished"
    return run_dir, err


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Each recipe, an uninterrupted run of it, and that run's figures."""
    folder = tmp_path_factory.mktemp("references")
    result = {}
    for kind, text in (("transfer", TRANSFER), ("meta", META)):
        recipe = folder / f"{kind}.yaml"
        recipe.write_text(text)
        out, _ = _finish(_workbench("run", recipe, "--runs-dir", folder / kind))
        run_dir = folder / kind / out.strip().splitlines()[-1].rsplit("/", 1)[-1]
        result[kind] = recipe, run_dir, _final_figures(run_dir)
    return result


def _point_after(number):
    return lambda runs_dir: (_resume_state(runs_dir) or {}).get("number", 0) >= number


def _check_resumed_like_the_reference(run_dir, reference_dir, expected):
    assert _final_figures(run_dir) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    phases = [line.split(",")[0] for line in (run_dir / runs.HISTORY_FILE).read_text().splitlines()]
    assert phases == [line.split(",")[0] for line in (reference_dir / runs.HISTORY_FILE).read_text().splitlines()]


def test_transfer_killed_inside_either_phase_resumes_from_there(references, tmp_path):
    recipe, reference_dir, expected = references["transfer"]
    fine_tune_epochs = json.loads((reference_dir / runs.METRICS_FILE).read_text())["phases"][1]["epochs"]
    assert fine_tune_epochs >= 3  # early stopping (patience 2) leaves room for a kill inside the phase
    # Resume points: head epochs 1-4 are points 1-4 and its end 5; fine-tune epoch k is point 5 + k.
    rng = random.Random("transfer")
    for phase, number in (("head", rng.randint(2, 3)), ("fine-tune", rng.randint(7, 4 + fine_tune_epochs))):
        run_dir, err = _kill_and_resume(recipe, tmp_path / phase, _point_after(number), f"resume point {number}")
        match = re.search(r"resuming phase (\S+) after epoch (\d+) of (\d+)", err)
        assert match, err[-2000:]
        assert match.group(1) == phase and int(match.group(2)) >= 2
        _check_resumed_like_the_reference(run_dir, reference_dir, expected)


def _history_has(phase):
    def condition(runs_dir):
        return any(f"\n{phase}," in path.read_text() for path in runs_dir.glob(f"*/{runs.HISTORY_FILE}"))

    return condition


def test_transfer_killed_in_its_scratch_baseline_resumes_after_its_phases(references, tmp_path):
    recipe, reference_dir, expected = references["transfer"]
    run_dir, err = _kill_and_resume(recipe, tmp_path / "runs", _history_has("scratch"), "the scratch baseline's first epoch")
    assert "resuming after the last phase" in err
    assert "Traceback" not in err
    _check_resumed_like_the_reference(run_dir, reference_dir, expected)


def test_meta_killed_at_a_random_iteration_resumes_from_there(references, tmp_path):
    recipe, reference_dir, expected = references["meta"]
    target = random.Random(3).randint(200, 3000)
    condition = lambda runs_dir: (_resume_state(runs_dir) or {}).get("iteration", 0) >= target  # noqa: E731
    run_dir, err = _kill_and_resume(recipe, tmp_path / "runs", condition, f"a resume point past iteration {target}")
    match = re.search(r"resuming at iteration (\d+) of 6000", err)
    assert match and int(match.group(1)) > target, err[-2000:]
    _check_resumed_like_the_reference(run_dir, reference_dir, expected)


def test_resume_refuses_a_changed_recipe_and_a_finished_run(tmp_path):
    recipe = tmp_path / "meta.yaml"
    recipe.write_text(META.replace("iterations: 6000", "iterations: 20").replace("every: 1000", "every: 10"))
    result = CliRunner().invoke(main, ["run", str(recipe), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    finished = CliRunner().invoke(main, ["resume", str(run_dir)])
    assert finished.exit_code == 2 and "already finished" in finished.output
    manifest = json.loads((run_dir / runs.MANIFEST_FILE).read_text())
    (run_dir / runs.MANIFEST_FILE).write_text(json.dumps({**manifest, "status": "running"}))  # this very process
    alive = CliRunner().invoke(main, ["resume", str(run_dir)])
    assert alive.exit_code == 2 and f"still running (process {os.getpid()})" in alive.output
    (run_dir / runs.MANIFEST_FILE).write_text(json.dumps({**manifest, "status": "interrupted"}))
    recipe.write_text(recipe.read_text().replace("learning_rate: 0.01", "learning_rate: 0.02").replace("every: 10", "every: 5"))
    changed = CliRunner().invoke(main, ["resume", str(run_dir)])
    assert changed.exit_code == 2
    (line,) = changed.output.strip().splitlines()
    # Only what changed, field by field; not the sections that hold it.
    assert "inner.learning_rate: 0.01 -> 0.02" in line and "evaluation.every: 10 -> 5" in line
    assert "steps" not in line


@pytest.mark.parametrize(
    "kind, stop, status", [("transfer", signal.SIGINT, 130), ("meta", signal.SIGINT, 130), ("meta", signal.SIGTERM, 143)]
)
def test_ctrl_c_and_sigterm_mark_the_run_interrupted_say_how_to_resume_and_resume(references, tmp_path, kind, stop, status):
    recipe = references[kind][0]
    runs_dir = tmp_path / "runs"
    process = _workbench("run", recipe, "--runs-dir", runs_dir)
    _wait_for(process, lambda: _point_after(2)(runs_dir), "the second resume point")
    process.send_signal(stop)
    out, err = process.communicate(timeout=TIMEOUT)
    (run_dir,) = runs_dir.iterdir()
    assert process.returncode == status, err[-2000:]
    assert out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"continue with: workbench resume {run_dir}")
    manifest = json.loads((run_dir / runs.MANIFEST_FILE).read_text())
    assert manifest["status"] == "interrupted" and manifest["signal"] == stop.name
    out, _ = _finish(_workbench("resume", run_dir))
    assert out.strip() == str(run_dir)
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "finished"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed exception, as expected
def test_a_ctrl_c_that_a_finalizer_swallows_still_stops_the_run():
    """Python ignores an exception raised in `__del__`, so a Ctrl-C arriving there was lost; `check()` answers it."""

    class SignalsWhileFinalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here; Python prints and drops its exception

    outside = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, whatever started the tests
    try:
        with pytest.raises(Interrupted) as stopped, interrupts.stop_signals():
            SignalsWhileFinalized()
            interrupts.check()
        assert stopped.value.exit_status == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored on the way out
    finally:
        signal.signal(signal.SIGINT, outside)


def test_a_signal_ignored_on_purpose_stays_ignored():
    """A shell starts background jobs with SIGINT ignored; a run must not take it back."""
    outside = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.stop_signals():
            os.kill(os.getpid(), signal.SIGINT)
            interrupts.check()
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # SIGTERM is still handled
    finally:
        signal.signal(signal.SIGINT, outside)


class _PointEpochs(keras.callbacks.Callback):
    """After each epoch, the epoch of the latest resume point (the saver runs first)."""

    def __init__(self, point):
        super().__init__()
        self.point, self.seen = point, []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append((self.point.load_state() or {}).get("epoch"))


@pytest.mark.parametrize("stop_after, expected", [(None, [1, 1, 1, 1, 5]), (3, [1, 1, 3])], ids=["to-the-end", "stopped-early"])
def test_costly_resume_points_are_skipped_but_the_first_and_the_phase_s_last(tmp_path, monkeypatch, stop_after, expected):
    """With no time to spare for writing, a phase writes its first epoch's point and its last one, early stopping's too."""
    monkeypatch.setattr(callbacks.ResumeSaver, "MAX_OVERHEAD", 0.0)
    run = runs.Run(tmp_path)
    run.file(runs.CHECKPOINTS_DIR).mkdir(parents=True)
    point = resume.ResumePoint(run)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    seen = _PointEpochs(point)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    # As early stopping does, before the saver.
    early = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(model, "stop_training", stop_after is not None and epoch + 1 >= stop_after)
    )
    model.fit(x, x[:, :2], epochs=5, verbose=0, callbacks=[early, callbacks.ResumeSaver(point, dict), seen])
    assert seen.seen == expected


def test_the_best_checkpoint_on_disk_is_always_the_latest_resume_point_s_best(tmp_path, monkeypatch):
    """Improving epochs are kept in memory; the file is written before each point and at the end of the phase."""
    monkeypatch.setattr(callbacks.ResumeSaver, "MAX_OVERHEAD", 0.0)  # points after epochs 1 and 5 only
    run = runs.Run(tmp_path)
    run.file(runs.CHECKPOINTS_DIR).mkdir(parents=True)
    point, path = resume.ResumePoint(run), tmp_path / "best.npz"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    checkpoint = callbacks.BestCheckpoint(path, "loss")
    weights, on_disk = [], []

    def record(epoch, logs):
        weights.append([w.numpy().copy() for w in model.weights])
        on_disk.append(point.load_state()["best_epoch"] if path.exists() else None)
        if path.exists():
            saved = runs.load_arrays(path)
            best = point.load_state()["best_epoch"]
            for index, value in enumerate(weights[best - 1]):
                np.testing.assert_array_equal(saved[f"arr_{index}"], value)

    saver = callbacks.ResumeSaver(point, lambda: {"best": checkpoint.best, "best_epoch": checkpoint.best_epoch}, checkpoint)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, x[:, :2], epochs=5, verbose=0, callbacks=[checkpoint, saver, keras.callbacks.LambdaCallback(on_epoch_end=record)])
    assert checkpoint.best_epoch == 5  # the loss fell every epoch
    assert on_disk == [1, 1, 1, 1, 5]
    model.set_weights(weights[0])
    checkpoint.restore(model)
    for value, expected in zip(model.get_weights(), weights[4], strict=True):
        np.testing.assert_array_equal(value, expected)
