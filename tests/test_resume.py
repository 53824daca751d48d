"""Runs survive SIGKILL: a killed `workbench run` resumes to the metrics of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main

TRANSFER = """\
kind: transfer
name: killed-transfer
seed: 3
data: {source: synthetic, name: glyphs, classes: 4, samples: 40, image_size: [16, 16], channels: 1, validation: 0.25, test: 0.25, batch_size: 8,
       augment: {rotation: 0.05}}
base: {source: builtin, name: conv4, weights: none}
freeze: {layers: {last: 8}, batchnorm: frozen}
head: {dropout: 0.3}
schedule:
  - {name: head, epochs: 4, learning_rate: 3.0e-3, lr_schedule: cosine, warmup_epochs: 1}
  - {name: fine-tune, unfreeze: all, epochs: 4, learning_rate: 1.0e-3, early_stopping: {patience: 2}}
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


def _workbench(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *args], env=ENVIRONMENT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _final_figures(run_dir):
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    if "phases" in metrics:
        return [metrics["test"]["loss"], metrics["test"]["accuracy"]] + [phase["val_loss"] for phase in metrics["phases"]]
    return [entry["mean"] for entry in metrics["evaluation"]] + [metrics["best_validation"]["mean"]]


def _run_killed_then_resumed(recipe, runs_dir, rng):
    """Start a run, SIGKILL it at a random moment of its training, resume it until it finishes."""
    process = _workbench("run", str(recipe), "--runs-dir", str(runs_dir))
    deadline = time.time() + 120
    while not list(runs_dir.glob("*/checkpoints/resume.json")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 3.0))
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = runs_dir.iterdir()
    # SIGKILL leaves no chance to write anything: the manifest still says running.
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "running", "the kill came after the run finished"
    resumed = _workbench("resume", str(run_dir))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "finished"
    return run_dir


@pytest.mark.parametrize("kind, text, trials", [("transfer", TRANSFER, 3), ("meta", META, 3)])
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path, kind, text, trials):
    recipe = tmp_path / f"{kind}.yaml"
    recipe.write_text(text)
    reference_dir = tmp_path / "reference"
    reference = _workbench("run", str(recipe), "--runs-dir", str(reference_dir))
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]
    expected = _final_figures(next(reference_dir.iterdir()))
    rng = random.Random(kind)
    for trial in range(trials):
        run_dir = _run_killed_then_resumed(recipe, tmp_path / f"trial-{trial}", rng)
        assert _final_figures(run_dir) == pytest.approx(expected, rel=1e-5, abs=1e-6), f"trial {trial}"
        history = (run_dir / runs.HISTORY_FILE).read_text().splitlines()
        reference_history = (next(reference_dir.iterdir()) / runs.HISTORY_FILE).read_text().splitlines()
        assert len(history) == len(reference_history)


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
    recipe.write_text(recipe.read_text().replace("learning_rate: 0.01", "learning_rate: 0.02"))
    changed = CliRunner().invoke(main, ["resume", str(run_dir)])
    assert changed.exit_code == 2
    assert "changed since" in changed.output and "inner.learning_rate: 0.01 -> 0.02" in changed.output


@pytest.mark.parametrize("kind, text", [("transfer", TRANSFER), ("meta", META)])
def test_ctrl_c_marks_the_run_interrupted_exits_130_and_resumes(tmp_path, kind, text):
    recipe = tmp_path / f"{kind}.yaml"
    recipe.write_text(text)
    runs_dir = tmp_path / "runs"
    process = _workbench("run", str(recipe), "--runs-dir", str(runs_dir))
    deadline = time.time() + 120
    while not list(runs_dir.glob("*/checkpoints/resume.json")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    (run_dir,) = runs_dir.iterdir()
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "interrupted"
    resumed = _workbench("resume", str(run_dir))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "finished"
