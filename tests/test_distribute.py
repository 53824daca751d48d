"""`distribute`: mirrored over logical CPU devices and two real workers on 127.0.0.1 train what one device trains.

Logical devices must exist before TensorFlow starts, and a cluster needs one
process per worker, so every run here is a `python -m workbench` subprocess.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from workbench import runs

# Its base is another recipe's run, trained first under the same strategy: every worker
# runs it alongside the chief.
BASE = """\
kind: transfer
name: spread-base
seed: 4
data: {source: synthetic, name: glyphs, classes: 4, first_class: 4, samples: 24, image_size: [16, 16], channels: 1, validation: 0.0, batch_size: 8}
base: {source: builtin, name: conv4, weights: none}
freeze: {layers: none}
schedule:
  - {name: all, epochs: 1, optimizer: sgd, learning_rate: 0.05}
"""

TRANSFER = """\
kind: transfer
name: spread-transfer
seed: 3
data: {source: synthetic, name: glyphs, classes: 4, samples: 40, image_size: [16, 16], channels: 1, validation: 0.25, test: 0.25, batch_size: 8}
base: {source: recipe, path: base.yaml}
freeze: {layers: {last: 8}}
schedule:
  - {name: head, epochs: 2, learning_rate: 3.0e-3, lr_schedule: cosine}
  - {name: fine-tune, unfreeze: all, epochs: 2, optimizer: sgd, learning_rate: 0.02}
"""

META = """\
kind: meta
name: spread-meta
seed: 5
tasks: {source: sinusoid, shots: 5, queries: 5}
model: {builtin: mlp}
inner: {steps: 1, learning_rate: 0.01}
outer: {meta_batch_size: 10, iterations: 40}
evaluation: {tasks: 20, steps: [1, 3], every: 20, validation_tasks: 10}
"""

# Conv4 with BatchNorm (exact batch moments, per task) and the per-task loop. Plain SGD:
# Adam turns reduction-order noise on weights whose gradient is nearly zero (a convolution's
# bias before BatchNorm) into steps of the learning rate's size.
META_CONV4 = """\
kind: meta
name: spread-meta-conv4
seed: 2
tasks: {source: synthetic, name: glyphs, classes: 60, samples: 20, image_size: [28, 28], validation: 0.3, test: 0.3, ways: 5, queries: 3}
model: {builtin: conv4}
inner: {steps: 1, learning_rate: 0.4}
outer: {optimizer: sgd, learning_rate: 0.05, meta_batch_size: 4, iterations: 6}
evaluation: {tasks: 10, steps: [1], every: 3, validation_tasks: 4}
"""

MIRRORED = ["--set", "distribute.strategy=mirrored", "--set", "distribute.devices=[/cpu:0, /cpu:1]"]
ENVIRONMENT = {**os.environ, "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _workbench(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *map(str, args)],
        env=env or ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start(recipe, runs_dir, *args, env=None):
    return _workbench("run", recipe, "--runs-dir", runs_dir, *args, env=env)


def _finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out.strip().splitlines()[-1]


def _run_dir(runs_dir, kind):
    (run_dir,) = runs_dir.glob(f"spread-{kind}-2*")  # the recipe's run, not its base's
    return run_dir


def _weights(runs_dir, kind):
    run_dir = _run_dir(runs_dir, kind)
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "finished"
    return keras.models.load_model(run_dir / runs.MODEL_FILE).get_weights()


def _assert_same_weights(expected, received):
    assert len(expected) == len(received)
    for index, (a, b) in enumerate(zip(expected, received, strict=True)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5, err_msg=f"weight {index}")


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """Each recipe, and its final weights on the default strategy (one device)."""
    folder = tmp_path_factory.mktemp("distribute")
    (folder / "base.yaml").write_text(BASE)
    result = {}
    for kind, text in (("transfer", TRANSFER), ("meta", META), ("meta-conv4", META_CONV4)):
        recipe = folder / f"{kind}.yaml"
        recipe.write_text(text)
        _finish(_start(recipe, folder / f"{kind}-default"))
        result[kind] = (recipe, _weights(folder / f"{kind}-default", kind))
    return result


@pytest.mark.parametrize("kind", ["transfer", "meta", "meta-conv4"])
def test_mirrored_over_two_logical_cpus_trains_the_same_weights(recipes, tmp_path, kind):
    recipe, expected = recipes[kind]
    _finish(_start(recipe, tmp_path, *MIRRORED))
    _assert_same_weights(expected, _weights(tmp_path, kind))
    assert "strategy: mirrored" in (_run_dir(tmp_path, kind) / runs.RECIPE_FILE).read_text()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cluster_environments(count):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(count)]}
    return [
        {**ENVIRONMENT, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})} for index in range(count)
    ]


@pytest.mark.parametrize("kind", ["transfer", "meta"])
def test_two_workers_on_localhost_train_the_same_weights_and_only_the_chief_writes(recipes, tmp_path, kind):
    recipe, expected = recipes[kind]
    workers = [
        _start(recipe, tmp_path / f"worker-{index}", "--set", "distribute.strategy=multi_worker", env=env)
        for index, env in enumerate(_cluster_environments(2))
    ]
    chief_line, worker_line = (_finish(worker) for worker in workers)
    assert chief_line.startswith(str(tmp_path / "worker-0"))
    assert "chief" in worker_line and not (tmp_path / "worker-1").exists()
    _assert_same_weights(expected, _weights(tmp_path / "worker-0", kind))


def test_multi_worker_without_tf_config_is_refused_in_one_line_before_any_run_directory(recipes, tmp_path):
    recipe, _ = recipes["meta"]
    environment = {key: value for key, value in ENVIRONMENT.items() if key != "TF_CONFIG"}
    process = _start(recipe, tmp_path / "runs", "--set", "distribute.strategy=multi_worker", env=environment)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("TF_CONFIG environment variable, which is not set")
    assert not (tmp_path / "runs").exists()


def _on_two_workers(*args):
    """`workbench ARGS` started on each of two workers on 127.0.0.1; their processes, chief first."""
    return [_workbench(*args, env=env) for env in _cluster_environments(2)]


def test_two_workers_killed_then_resumed_finish_like_an_uninterrupted_pair(tmp_path):
    """Against a multi-worker reference: over many steps, one device's other summation order drifts (2% of the MSE after 3000)."""
    recipe = tmp_path / "long.yaml"
    recipe.write_text(
        META.replace("iterations: 40", "iterations: 1500").replace("every: 20", "every: 500") + "distribute: {strategy: multi_worker}\n"
    )
    chief_line, _ = (_finish(process) for process in _on_two_workers("run", recipe, "--runs-dir", tmp_path / "reference"))
    expected = json.loads((Path(chief_line) / runs.METRICS_FILE).read_text())
    runs_dir = tmp_path / "runs"
    workers = _on_two_workers("run", recipe, "--runs-dir", runs_dir)
    deadline = time.time() + 120
    while not list(runs_dir.glob("*/checkpoints/resume.json")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    (run_dir,) = runs_dir.iterdir()
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "running", "the kill came after the run finished"
    chief_line, worker_line = (_finish(process) for process in _on_two_workers("resume", run_dir))
    assert chief_line == str(run_dir) and "chief" in worker_line
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert [e["mean"] for e in metrics["evaluation"]] == pytest.approx([e["mean"] for e in expected["evaluation"]], rel=1e-5)
    assert metrics["best_validation"] == pytest.approx(expected["best_validation"], rel=1e-5)
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["resumed"] == 1
