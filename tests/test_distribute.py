"""`distribute`: mirrored over logical CPU devices and two real workers on 127.0.0.1 train what one device trains.

Logical devices must exist before TensorFlow starts, and a cluster needs one
process per worker, so every run here is a `python -m workbench` subprocess.

The one-device reference runs on TensorFlow's own kernels (oneDNN off), the
runs compared with it on oneDNN's: other float32 kernels, as another CPU picks.
A recipe that turns rounding differences into different weights then fails
here, not only on another machine; every recipe below is calm enough that the
weights agree to 1e-5 of their scale (measured: 2e-6 at most).
"""

import json
import os
import re
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

# Its base is another recipe's run, found or trained first (on one device, as its own recipe
# says): every worker trains it alongside the chief.
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
  - {name: head, epochs: 2, learning_rate: 1.0e-3, lr_schedule: cosine}
  - {name: fine-tune, unfreeze: all, epochs: 2, optimizer: sgd, learning_rate: 0.01}
"""

# BatchNorm trains: each replica sees half of every batch, and synchronised
# BatchNorm must normalise with, and keep the moving statistics of, the whole
# batch (without it, they differ from one device's by 0.9).
BATCHNORM = """\
kind: transfer
name: spread-batchnorm
seed: 6
data: {source: synthetic, name: glyphs, classes: 4, samples: 40, image_size: [16, 16], channels: 1, validation: 0.25, test: 0.25, batch_size: 8}
base: {source: builtin, name: conv4, weights: none}
freeze: {layers: none, batchnorm: train}
schedule:
  - {name: all, epochs: 2, optimizer: sgd, learning_rate: 0.005}
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
# bias before BatchNorm) into steps of the learning rate's size. On tasks this small, conv4's
# meta-gradient jumps where an input of a ReLU or a max-pool crosses its kink: measured, a
# relative change of 1e-7 in the weights changed it by 0.3%, the same as a change of 1e-6
# (a kink, not a slope), first order too, whatever the inner rate; the next iterations
# compound it (inner rate 0.4 and meta rate 0.05 left weights 6.2 apart on another CPU).
# The differences scale with the meta rate: 1e-4 over three iterations keeps them at float32
# rounding (measured 2e-7 on seeds 1-4, oneDNN against TensorFlow's kernels; 5e-4 gave 7e-6).
META_CONV4 = """\
kind: meta
name: spread-meta-conv4
seed: 2
tasks: {source: synthetic, name: glyphs, classes: 60, samples: 20, image_size: [16, 16], validation: 0.3, test: 0.3, ways: 5, queries: 3}
model: {builtin: conv4}
inner: {steps: 1, learning_rate: 0.05}
outer: {optimizer: sgd, learning_rate: 1.0e-4, meta_batch_size: 4, iterations: 3}
evaluation: {tasks: 10, steps: [1], every: 3, validation_tasks: 4}
"""

MIRRORED = ["--set", "distribute.strategy=mirrored", "--set", "distribute.devices=[/cpu:0, /cpu:1]"]
ENVIRONMENT = {**os.environ, "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
REFERENCE_ENVIRONMENT = {**ENVIRONMENT, "TF_ENABLE_ONEDNN_OPTS": "0"}
KINDS = {"transfer": TRANSFER, "batchnorm": BATCHNORM, "meta": META, "meta-conv4": META_CONV4}


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


def _communicate(process):
    """The last line a finished `workbench` process printed on stdout (its run directory), and its stderr."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out.strip().splitlines()[-1], err


def _finish(process):
    return _communicate(process)[0]


def _run_dir(runs_dir, kind):
    (run_dir,) = runs_dir.glob(f"spread-{kind}-2*")  # the recipe's run, not its base's
    return run_dir


def _manifest(run_dir):
    return json.loads((run_dir / runs.MANIFEST_FILE).read_text())


def _model(runs_dir, kind):
    run_dir = _run_dir(runs_dir, kind)
    assert _manifest(run_dir)["status"] == "finished"
    return keras.models.load_model(run_dir / runs.MODEL_FILE)


def _assert_same_weights(expected, received):
    """Equal to 1e-5 of each weight's scale (moving variances grow past 1)."""
    assert len(expected) == len(received)
    for index, (a, b) in enumerate(zip(expected, received, strict=True)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(1.0, float(np.abs(a).max())), err_msg=f"weight {index}")


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """Each recipe, and its model trained on the default strategy (one device) with TensorFlow's own kernels."""
    folder = tmp_path_factory.mktemp("distribute")
    (folder / "base.yaml").write_text(BASE)
    result = {}
    for kind, text in KINDS.items():
        recipe = folder / f"{kind}.yaml"
        recipe.write_text(text)
        _finish(_start(recipe, folder / f"{kind}-default", env=REFERENCE_ENVIRONMENT))
        assert _manifest(_run_dir(folder / f"{kind}-default", kind))["distribute"] == {"strategy": "default", "replicas": 1}
        result[kind] = (recipe, _model(folder / f"{kind}-default", kind))
    return result


@pytest.fixture(scope="module")
def mirrored(recipes, tmp_path_factory):
    """The model of a recipe trained under `mirrored` over two logical CPUs, trained once per module."""
    trained = {}

    def model(kind):
        if kind not in trained:
            runs_dir = tmp_path_factory.mktemp(f"mirrored-{kind}")
            _finish(_start(recipes[kind][0], runs_dir, *MIRRORED))
            assert _manifest(_run_dir(runs_dir, kind))["distribute"] == {"strategy": "mirrored", "replicas": 2}
            trained[kind] = _model(runs_dir, kind)
        return trained[kind]

    return model


@pytest.mark.parametrize("kind", list(KINDS))
def test_mirrored_over_two_logical_cpus_trains_the_same_weights(recipes, mirrored, kind):
    _assert_same_weights(recipes[kind][1].get_weights(), mirrored(kind).get_weights())


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _batchnorm_statistics(model):
    layers = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    return {layer.name: (layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers}


def test_mirrored_batchnorm_keeps_the_moving_statistics_of_one_device(recipes, mirrored):
    expected, received = _batchnorm_statistics(recipes["batchnorm"][1]), _batchnorm_statistics(mirrored("batchnorm"))
    assert sorted(received) == ["block1_bn", "block2_bn", "block3_bn", "block4_bn"] == sorted(expected)
    for name, (mean, variance) in expected.items():
        # They moved well away from where they start (0 and 1)...
        assert np.abs(mean).max() > 0.01 and np.abs(variance - 1).max() > 0.01, name
        # ...to the same values on two replicas as on one device.
        np.testing.assert_allclose(received[name][0], mean, rtol=0, atol=1e-5 * max(1.0, float(np.abs(mean).max())), err_msg=name)
        np.testing.assert_allclose(received[name][1], variance, rtol=0, atol=1e-5 * max(1.0, float(variance.max())), err_msg=name)


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
    assert _manifest(_run_dir(tmp_path / "worker-0", kind))["distribute"] == {"strategy": "multi_worker", "replicas": 2}
    _assert_same_weights(expected.get_weights(), _model(tmp_path / "worker-0", kind).get_weights())


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
        META.replace("iterations: 40", "iterations: 600").replace("every: 20", "every: 200") + "distribute: {strategy: multi_worker}\n"
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
    (chief_line, chief_log), (worker_line, _) = (_communicate(process) for process in _on_two_workers("resume", run_dir))
    assert chief_line == str(run_dir) and "chief" in worker_line
    # The resumed pair trains only what was left: it starts strictly inside the run.
    started = re.search(r"resuming at iteration (\d+) of 600", chief_log)
    assert started and 1 < int(started.group(1)) <= 600, chief_log[-2000:]
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert [e["mean"] for e in metrics["evaluation"]] == pytest.approx([e["mean"] for e in expected["evaluation"]], rel=1e-5)
    assert metrics["best_validation"] == pytest.approx(expected["best_validation"], rel=1e-5)
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["resumed"] == 1
