"""Bad models, data and output folders: a clear message, exit status 2, nothing already written lost."""

import hashlib
import json
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from workbench import runs
from workbench.cli import main


@pytest.fixture
def runs_dir(tmp_path):
    """A runs folder that already holds a finished run, which no failure may touch."""
    folder = tmp_path / "runs"
    earlier = folder / "earlier-run"
    (earlier / runs.CHECKPOINTS_DIR).mkdir(parents=True)
    (earlier / runs.MANIFEST_FILE).write_text(json.dumps({"status": "finished"}))
    (earlier / runs.MODEL_FILE).write_bytes(b"model bytes")
    return folder


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(tmp_path, runs_dir, text):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    before = _digest(runs_dir / "earlier-run")
    result = CliRunner().invoke(main, ["run", str(recipe), "--runs-dir", str(runs_dir)])
    assert _digest(runs_dir / "earlier-run") == before
    assert "Traceback" not in result.output
    return result


def _images(folder, classes, per_class, sizes=((20, 20),), modes=("L",)):
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = sizes[index % len(sizes)]
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(modes[index % len(modes)]).save(folder / name / f"{index}.png")


TRANSFER = """\
kind: transfer
data: {{source: folder, path: {path}, image_size: [16, 16], channels: 1, validation: 0.25, batch_size: 4}}
base: {{source: {base}}}
schedule: [{{name: head, epochs: 1}}]
"""

META = """\
kind: meta
tasks: {{source: folder, path: {path}, ways: {ways}, shots: 1, queries: 3, image_size: [16, 16], validation: 0.25, test: 0.25}}
model: {{builtin: conv4}}
outer: {{meta_batch_size: 2, iterations: 2}}
evaluation: {{tasks: 4, every: 2, validation_tasks: 2}}
"""


def _saved_model(path, with_lambda=False):
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Flatten()(inputs)
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(path)
    return path


def test_a_model_with_a_lambda_layer_is_refused(tmp_path, runs_dir):
    _images(tmp_path / "data", ["a", "b"], 4)
    model = _saved_model(tmp_path / "lambda.keras", with_lambda=True)
    result = _run(tmp_path, runs_dir, TRANSFER.format(path=tmp_path / "data", base=f"file, path: {model}"))
    assert result.exit_code == 2 and "cannot load this model safely" in result.output


def test_a_model_naming_an_unknown_class_is_refused(tmp_path, runs_dir):
    _images(tmp_path / "data", ["a", "b"], 4)
    model = _saved_model(tmp_path / "plain.keras")
    edited = tmp_path / "unknown.keras"
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(edited, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b'"Dense"', b'"NoSuchLayer"')
            target.writestr(item, data)
    result = _run(tmp_path, runs_dir, TRANSFER.format(path=tmp_path / "data", base=f"file, path: {edited}"))
    assert result.exit_code == 2 and "cannot load this model safely" in result.output and "NoSuchLayer" in result.output


@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_a_truncated_or_corrupt_model_file_is_a_clear_error(tmp_path, runs_dir, damage):
    _images(tmp_path / "data", ["a", "b"], 4)
    model = _saved_model(tmp_path / "model.keras")
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a model at all")
    result = _run(tmp_path, runs_dir, TRANSFER.format(path=tmp_path / "data", base=f"file, path: {model}"))
    assert result.exit_code == 2 and f"{model}: cannot load this model safely" in result.output


def test_an_empty_folder_is_a_clear_error(tmp_path, runs_dir):
    (tmp_path / "empty").mkdir()
    result = _run(tmp_path, runs_dir, TRANSFER.format(path=tmp_path / "empty", base="builtin, name: conv4, weights: none"))
    assert result.exit_code == 2 and "The dataset is empty" in result.output


def _plan(tmp_path, text, *overrides):
    """`workbench validate --plan` on a recipe; returns its path and the result."""
    recipe = tmp_path / "plan.yaml"
    recipe.write_text(text)
    result = CliRunner().invoke(
        main, ["validate", "--plan", str(recipe), *(part for assignment in overrides for part in ("--set", assignment))]
    )
    assert "Traceback" not in result.output and ": ok (" not in result.output
    return recipe, result


def test_fewer_classes_than_ways_is_a_clear_error(tmp_path, runs_dir):
    _images(tmp_path / "data", [f"c{i}" for i in range(8)], 6)
    text = META.format(path=tmp_path / "data", ways=5)
    recipe, planned = _plan(tmp_path, text)
    assert planned.exit_code == 2
    assert re.fullmatch(
        rf"{re.escape(str(recipe))}:2:\d+: tasks.ways: meta-train: 5-way tasks need at least 5 classes, but there are 4\. .*\n",
        planned.output,
    )
    _, overridden = _plan(tmp_path, text.replace("ways: 5", "ways: 2"), "tasks.ways=5")
    assert overridden.exit_code == 2 and overridden.output.startswith("--set tasks.ways=5: tasks.ways: meta-train: 5-way tasks")
    result = _run(tmp_path, runs_dir, text)
    assert result.exit_code == 2 and "5-way tasks need at least 5 classes" in result.output


def test_a_class_with_fewer_images_than_shots_and_queries_is_named(tmp_path, runs_dir):
    _images(tmp_path / "data", [f"c{i}" for i in range(12)], 6)
    for extra in sorted((tmp_path / "data" / "c3").iterdir())[2:]:
        extra.unlink()
    text = META.format(path=tmp_path / "data", ways=2)
    recipe, planned = _plan(tmp_path, text)
    assert planned.exit_code == 2
    assert re.fullmatch(
        rf"{re.escape(str(recipe))}:2:\d+: tasks.shots: Class 'c3' has 2 images \(meta-\w+\), .*shots \+ queries = 4 .*\n", planned.output
    )
    result = _run(tmp_path, runs_dir, text)
    assert result.exit_code == 2 and "'c3' has 2 images" in result.output and "shots + queries = 4" in result.output


def test_a_class_too_small_for_the_held_out_fraction_is_named_by_plan_and_run(tmp_path, runs_dir):
    _images(tmp_path / "data", ["alpha", "beta", "gamma"], 4)
    for extra in sorted((tmp_path / "data" / "beta").iterdir())[1:]:
        extra.unlink()
    text = TRANSFER.format(path=tmp_path / "data", base="builtin, name: conv4")
    recipe, planned = _plan(tmp_path, text)
    message = "Class 'beta' has 1 image, too few to hold out validation=0.25 and test=0 and keep one to train on"
    assert planned.exit_code == 2 and planned.output.startswith(f"{recipe}:2:") and f": data.validation: {message}" in planned.output
    result = _run(tmp_path, runs_dir, text)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("kind", ["transfer", "meta"])
def test_data_with_one_class_is_refused_by_plan_and_run(tmp_path, runs_dir, kind):
    _images(tmp_path / "data", ["only"], 8)
    if kind == "transfer":
        text = TRANSFER.format(path=tmp_path / "data", base="builtin, name: conv4")
    else:
        text = META.format(path=tmp_path / "data", ways=2)
    field = "data.path" if kind == "transfer" else "tasks.path"
    message = "The data hold 1 class ('only'), but a classifier needs at least 2 to tell apart"
    recipe, planned = _plan(tmp_path, text)
    assert planned.exit_code == 2 and re.match(rf"{re.escape(str(recipe))}:2:\d+: {field}: {re.escape(message)}", planned.output)
    result = _run(tmp_path, runs_dir, text)
    assert result.exit_code == 2 and message in result.output


def test_a_base_that_cannot_take_the_image_size_is_placed_at_its_field(tmp_path):
    text = """\
kind: transfer
data: {source: synthetic, name: glyphs, classes: 3, samples: 4, image_size: [28, 28], channels: 3}
base: {source: applications, name: InceptionV3, weights: none}
schedule: [{name: head, epochs: 1}]
"""
    recipe, planned = _plan(tmp_path, text)
    assert planned.exit_code == 2
    assert re.fullmatch(rf"{re.escape(str(recipe))}:3:\d+: base.name: keras.applications.InceptionV3 cannot be built .*\n", planned.output)


def test_plan_checks_the_data_without_tensorflow(tmp_path):
    _images(tmp_path / "data", ["alpha", "beta"], 4)
    for extra in sorted((tmp_path / "data" / "beta").iterdir())[1:]:
        extra.unlink()
    transfer = tmp_path / "transfer.yaml"
    transfer.write_text(TRANSFER.format(path=tmp_path / "data", base="builtin, name: conv4"))
    meta = tmp_path / "meta.yaml"
    meta.write_text(META.format(path=tmp_path / "data", ways=2))
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from workbench.cli import main\n"
        f"result = CliRunner().invoke(main, ['validate', '--plan', {str(transfer)!r}, {str(meta)!r}])\n"
        "print(result.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
        "print(result.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    status, output = done.stdout.split("\n", 1)
    assert status == "2 False False", done.stdout + done.stderr
    assert f"{transfer}:2:" in output and "data.validation: Class 'beta' has 1 image" in output
    assert f"{meta}:2:" in output and "tasks.path: Splitting classes" in output


def test_corrupt_images_and_mixed_modes_and_sizes_are_handled_and_counted(tmp_path, runs_dir, caplog):
    _images(tmp_path / "data", ["a", "b", "c"], 8, sizes=((20, 20), (31, 17), (12, 40)), modes=("L", "RGB", "RGBA", "P"))
    (tmp_path / "data" / "b" / "broken.png").write_bytes(b"\x89PNG but not really")
    with caplog.at_level("WARNING"):
        result = _run(tmp_path, runs_dir, TRANSFER.format(path=tmp_path / "data", base="builtin, name: conv4, weights: none"))
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image file in " in caplog.text and "b/broken.png: not an image format Pillow can read" in caplog.text
    assert "BytesIO" not in caplog.text


def test_an_output_folder_that_cannot_be_written_is_reported_before_training(tmp_path):
    _images(tmp_path / "data", ["a", "b"], 4)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TRANSFER.format(path=tmp_path / "data", base="builtin, name: conv4, weights: none"))
    result = CliRunner().invoke(main, ["run", str(recipe), "--runs-dir", str(blocker / "runs")])
    assert result.exit_code == 2 and "cannot write run directories here" in result.output
    assert blocker.read_text() == "a file where the runs folder should be"


def test_a_diverging_loss_fails_the_run_keeps_the_last_good_resume_point_and_its_error_on_resume(tmp_path, runs_dir):
    _images(tmp_path / "data", ["a", "b"], 8)
    text = TRANSFER.format(path=tmp_path / "data", base="builtin, name: conv4, weights: none").replace(
        "schedule: [{name: head, epochs: 1}]",
        "freeze: {layers: none}\nschedule: [{name: head, epochs: 1}, {name: boom, epochs: 2, optimizer: sgd, learning_rate: 1.0e+30}]",
    )
    result = _run(tmp_path, runs_dir, text)
    assert result.exit_code == 2 and "the loss became" in result.output and "'boom'" in result.output
    (run_dir,) = [path for path in runs_dir.iterdir() if path.name != "earlier-run"]
    manifest = json.loads((run_dir / runs.MANIFEST_FILE).read_text())
    assert manifest["status"] == "failed" and "loss became" in manifest["error"]
    resume_point = json.loads((run_dir / runs.CHECKPOINTS_DIR / "resume.json").read_text())
    assert resume_point["phase"] == 1 and resume_point["epoch"] == 0  # the end of the good phase

    resumed = CliRunner().invoke(main, ["resume", str(run_dir)])
    assert resumed.exit_code == 2 and "the loss became" in resumed.output
    again = json.loads((run_dir / runs.MANIFEST_FILE).read_text())
    assert again["status"] == "failed" and again["resumed"] == 1
    assert [earlier["error"] for earlier in again["earlier_errors"]] == [manifest["error"]]
