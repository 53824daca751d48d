"""The runner: recipe bases found or trained before a run seeds itself, what `workbench run` prints, and how it fails."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from workbench import runs
from workbench.cli import main

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

BASE = """\
kind: transfer
name: chained-base
seed: 4
data: {source: synthetic, name: glyphs, classes: 6, samples: 20, image_size: [16, 16], channels: 1, validation: 0.2, batch_size: 16}
base: {source: builtin, name: conv4}
freeze: {layers: none, batchnorm: train}
schedule:
  - {epochs: 2, learning_rate: 3.0e-3}
"""

# Dropout and augmentation draw from the run's random state: a base trained in the
# same process just before must not move them.
CHAINED = """\
kind: transfer
name: chained
seed: 9
data: {source: synthetic, name: glyphs, classes: 4, first_class: 50, samples: 20, image_size: [16, 16], channels: 1,
       validation: 0.25, test: 0.25, batch_size: 8, augment: {rotation: 0.05}}
base: {source: recipe, path: base.yaml}
head: {units: [16], dropout: 0.3}
schedule:
  - {name: head, epochs: 3, learning_rate: 3.0e-3}
"""


def _invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_a_recipe_base_trained_in_the_process_or_reused_gives_the_same_figures(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "chained.yaml").write_text(CHAINED)
    first = _invoke("run", tmp_path / "chained.yaml", "--runs-dir", tmp_path / "runs")  # trains the base first
    assert first.exit_code == 0, first.output
    second = _invoke("run", tmp_path / "chained.yaml", "--runs-dir", tmp_path / "runs")  # reuses it
    assert second.exit_code == 0, second.output
    (base_run,) = (tmp_path / "runs").glob("chained-base-*")
    chained = sorted((tmp_path / "runs").glob("chained-2*"))
    assert len(chained) == 2
    manifests = [json.loads((run / runs.MANIFEST_FILE).read_text()) for run in chained]
    assert [manifest["base_run"] for manifest in manifests] == [str(base_run.resolve())] * 2
    metrics = [_figures(json.loads((run / runs.METRICS_FILE).read_text())) for run in chained]
    assert metrics[0] == metrics[1]


def _figures(metrics):
    """A transfer run's metrics less the time training took, which no two runs share."""
    timing = ("training_seconds", "training_cpu_seconds")
    phases = [{key: value for key, value in phase.items() if key not in timing} for phase in metrics["phases"]]
    return {**{key: value for key, value in metrics.items() if key not in timing}, "phases": phases}


def test_run_prints_its_result_on_stderr_and_only_the_run_directory_on_stdout(tmp_path):
    recipe = tmp_path / "base.yaml"
    recipe.write_text(BASE.replace("validation: 0.2", "validation: 0.2, test: 0.2"))
    process = subprocess.run(
        [sys.executable, "-m", "workbench", "run", str(recipe), "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=600,
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert process.returncode == 0, process.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert process.stdout == f"{tmp_path / 'runs' / run_dir.name}\n"
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert f"test accuracy {metrics['test']['accuracy']:.1%}" in process.stderr
    assert "Epoch 2/2" in process.stderr  # Keras's progress, on stderr
    for chatter in ("oneDNN custom operations", "cuda drivers", "absl::InitializeLog"):
        assert chatter not in process.stderr


def test_head_classes_that_disagree_with_the_data_are_refused_before_training(tmp_path):
    recipe = tmp_path / "base.yaml"
    for classes in (4, 10):
        recipe.write_text(BASE.replace("schedule:", f"head: {{classes: {classes}}}\nschedule:"))
        result = _invoke("run", recipe, "--runs-dir", tmp_path / "runs")
        assert result.exit_code == 2
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"head.classes: {classes}, but the data has 6 classes (glyph-0, glyph-1, glyph-2, ...)")
    assert not list((tmp_path / "runs").glob(f"*/{runs.HISTORY_FILE}"))


def test_a_conv4_too_small_for_its_images_is_one_line_not_a_traceback(tmp_path):
    recipe = tmp_path / "meta.yaml"
    recipe.write_text(
        "kind: meta\ntasks: {source: synthetic, name: glyphs, classes: 30, samples: 10, image_size: [8, 8], validation: 0.3, test: 0.3, queries: 2}\n"
        "model: {builtin: conv4}\nouter: {iterations: 2}\n"
    )
    result = _invoke("run", recipe, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "at least 16 pixels" in line and "input_shape=(8, 8, 1)" in line


def test_imagenet_weights_that_cannot_be_downloaded_are_one_line_saying_where_to_put_them(tmp_path):
    recipe = tmp_path / "imagenet.yaml"
    recipe.write_text(
        BASE.replace("channels: 1", "channels: 3")
        .replace("image_size: [16, 16]", "image_size: [32, 32]")
        .replace("base: {source: builtin, name: conv4}", "base: {source: applications, name: MobileNetV2, weights: imagenet}")
    )
    # An unreachable proxy stands in for a machine without the internet, whether or not this one has it.
    offline = {
        **os.environ,
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "KERAS_HOME": str(tmp_path / "keras"),
    }
    process = subprocess.run(
        [sys.executable, "-m", "workbench", "run", str(recipe), "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=600,
        env=offline,
    )
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    line = process.stderr.strip().splitlines()[-1]
    assert (
        line.startswith(f"{recipe}:5:") and "base.weights: imagenet: Keras could not download the ImageNet weights of MobileNetV2" in line
    )
    assert f"put mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 in {tmp_path / 'keras' / 'models'}" in line


def _imports(module: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_models_build_only_and_meta_stands_apart_from_transfer():
    """models/ never reaches the runners or meta-learning; meta/ never reaches the transfer schedule."""
    for module in (PACKAGE / "models").glob("*.py"):
        reached = {name for name in _imports(module) if name.startswith("workbench.")}
        assert not {name for name in reached if name.split(".")[1] in ("meta", "runner", "transfer", "plan")}, module.name
    for module in (PACKAGE / "meta").glob("*.py"):
        assert not {name for name in _imports(module) if name.startswith(("workbench.transfer", "workbench.runner"))}, module.name
