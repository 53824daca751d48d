"""`workbench predict`, `adapt` and `evaluate` as a user meets them: on tiny real runs of each kind."""

import csv
import io
import json
import logging

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from workbench import runs
from workbench.cli import main
from workbench.headline import headline
from workbench.recipe import load_recipe
from workbench.runner import run_recipe

SIZE = 16  # every recipe and image here is 16x16 grayscale, so that no resizing happens

TRANSFER = f"""\
kind: transfer
name: tiny-conv4
seed: 3
data: {{source: synthetic, name: glyphs, classes: 3, samples: 8, validation: 0.25, test: 0.25, image_size: [{SIZE}, {SIZE}], channels: 1, batch_size: 8}}
base: {{source: builtin, name: conv4, weights: none}}
freeze: {{layers: none, batchnorm: train}}
schedule:
  - {{name: train, epochs: 1, learning_rate: 1.0e-3}}
"""

GLYPH_META = f"""\
kind: meta
algorithm: maml
seed: 5
tasks: {{source: synthetic, name: glyphs, classes: 16, samples: 4, ways: 2, shots: 1, queries: 1, image_size: [{SIZE}, {SIZE}], validation: 0.25, test: 0.25}}
model: {{builtin: conv4}}
inner: {{steps: 1, learning_rate: 0.1}}
outer: {{meta_batch_size: 2, iterations: 2}}
evaluation: {{tasks: 2, steps: [1], every: 2, validation_tasks: 2}}
"""

SINUSOID = """\
kind: meta
algorithm: maml
seed: 4
tasks: {source: sinusoid, shots: 5, queries: 5}
model: {builtin: mlp}
inner: {steps: 1, learning_rate: 0.01}
outer: {meta_batch_size: 2, iterations: 2}
evaluation: {tasks: 4, steps: [1, 2], every: 2, validation_tasks: 2}
"""


def _run(folder, text):
    path = folder / "recipe.yaml"
    path.write_text(text)
    return run_recipe(load_recipe(path), path, folder / "runs")


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("transfer"), TRANSFER)


@pytest.fixture(scope="module")
def glyph_meta_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("glyph-meta"), GLYPH_META)


@pytest.fixture(scope="module")
def sinusoid_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("sinusoid"), SINUSOID)


def _save_image(path, seed, format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=format)
    return path


def _pixels(path):
    """The image as the model sees it, decoded here without the workbench."""
    return np.asarray(Image.open(path).convert("L"), dtype="float32")[..., None]


def _predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def test_predict_on_a_sinusoid_meta_run_is_a_one_line_error(sinusoid_run, tmp_path):
    run_dir = sinusoid_run
    image = _save_image(tmp_path / "x.png", 0)
    for model in (run_dir, run_dir / runs.MODEL_FILE):
        result = _predict(model, image)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "regress sinusoids" in result.output
        assert f"workbench evaluate {run_dir}" in result.output


def test_predict_on_a_classification_meta_run_says_to_adapt_first(glyph_meta_run, tmp_path):
    image = _save_image(tmp_path / "x.png", 0)
    for model in (glyph_meta_run, glyph_meta_run / runs.MODEL_FILE):
        result = _predict(model, image)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1
        assert f"workbench adapt {glyph_meta_run} --support FOLDER -o MODEL.keras" in result.output


def test_adapt_writes_into_a_folder_that_does_not_exist_yet(glyph_meta_run, tmp_path):
    support = tmp_path / "support"
    for label in ("alpha", "beta"):
        _save_image(support / label / "0.png", len(label))
    output = tmp_path / "new" / "deeper" / "adapted.keras"
    result = CliRunner().invoke(main, ["adapt", str(glyph_meta_run), "--support", str(support), "--steps", "1", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert result.output == f"adapted to 2 classes from 2 images in 1 step: {output}\n"
    assert json.loads(output.with_suffix(".classes.json").read_text()) == ["alpha", "beta"]
    assert sorted(path.name for path in output.parent.iterdir()) == ["adapted.classes.json", "adapted.keras"]  # no temporary left
    before = output.read_bytes()
    again = CliRunner().invoke(main, ["adapt", str(glyph_meta_run), "--support", str(support), "-o", str(output)])
    assert again.exit_code == 2 and "already exists" in again.output and output.read_bytes() == before


def test_a_runs_model_file_is_predicted_with_the_runs_class_names(transfer_run, tmp_path):
    image = _save_image(tmp_path / "x.png", 1)
    from_run = _predict(transfer_run, image, "--top-k", "3")
    from_file = _predict(transfer_run / runs.MODEL_FILE, image, "--top-k", "3")
    assert from_run.exit_code == 0 and from_file.exit_code == 0, from_file.output
    names = json.loads((transfer_run / runs.CLASSES_FILE).read_text())
    listed = [entry.rsplit(" ", 1)[0] for entry in from_file.output.strip().split(": ", 1)[1].split(", ")]
    assert sorted(listed) == sorted(names)
    assert from_file.output == from_run.output


def test_a_folder_predicts_each_image_in_it_recursively_sorted(transfer_run, tmp_path, caplog):
    folder = tmp_path / "mine"
    images = [
        _save_image(folder / "a.jpg", 2, format="JPEG"),
        _save_image(folder / "b.png", 3),
        _save_image(folder / "sub" / "c.PNG", 4, format="PNG"),
    ]
    (folder / "notes.txt").write_text("not an image")
    _save_image(folder / ".thumbnail.png", 5)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    single = _save_image(tmp_path / "single.png", 6)
    with caplog.at_level(logging.WARNING):
        result = _predict(transfer_run, single, folder, "--format", "json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [entry["image"] for entry in listed] == [str(single), *map(str, images)]
    assert any(str(folder / "broken.png") in message for message in caplog.messages)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    empty = _predict(transfer_run, tmp_path / "empty")
    assert empty.exit_code == 2 and "no image files in this folder or below" in empty.output

    model = keras.models.load_model(transfer_run / runs.MODEL_FILE)
    names = json.loads((transfer_run / runs.CLASSES_FILE).read_text())
    expected = model.predict(np.stack([_pixels(path) for path in (single, *images)]), verbose=0)
    for entry, row in zip(listed, expected, strict=True):
        order = np.argsort(row)[::-1]
        assert [p["class"] for p in entry["predictions"]] == [names[i] for i in order]
        np.testing.assert_allclose([p["probability"] for p in entry["predictions"]], row[order], atol=1e-5)


def test_csv_output_has_one_row_per_image_and_rank(transfer_run, tmp_path):
    first, second = _save_image(tmp_path / "1.png", 7), _save_image(tmp_path / "2.png", 8)
    as_json = json.loads(_predict(transfer_run, first, second, "--format", "json", "--top-k", "2").output)
    result = _predict(transfer_run, first, second, "--format", "csv", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["image", "rank", "class", "probability"]
    expected = [
        [entry["image"], str(rank), prediction["class"], prediction["probability"]]
        for entry in as_json
        for rank, prediction in enumerate(entry["predictions"], start=1)
    ]
    assert [row[:3] for row in rows[1:]] == [row[:3] for row in expected]
    np.testing.assert_allclose([float(row[3]) for row in rows[1:]], [row[3] for row in expected], atol=1e-6)


def test_top_k_is_clamped_and_outputs_without_a_name_are_class_n(tmp_path):
    """A head with 5 outputs and 3 names (head.classes above the data's classes)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "wide.keras")
    (tmp_path / "wide.classes.json").write_text(json.dumps(["alpha", "beta", "gamma"]))
    image = _save_image(tmp_path / "x.png", 9)

    result = _predict(tmp_path / "wide.keras", image, "--top-k", "10", "--format", "json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)
    row = model.predict(_pixels(image)[None], verbose=0)[0]
    names = ["alpha", "beta", "gamma", "class 3", "class 4"]
    assert [p["class"] for p in entry["predictions"]] == [names[i] for i in np.argsort(row)[::-1]]

    (tmp_path / "wide.classes.json").write_text(json.dumps([f"c{i}" for i in range(6)]))
    mismatched = _predict(tmp_path / "wide.keras", image)
    assert mismatched.exit_code == 2 and "names 6 classes but the model has 5 outputs" in mismatched.output


def test_the_headline_and_evaluate_say_1_step(sinusoid_run):
    run_dir = sinusoid_run
    meta_test = headline(run_dir).splitlines()
    assert [message.split(":")[0] for message in meta_test] == ["meta-test mse after 1 step", "meta-test mse after 2 steps"]
    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("mse after 1 step: ") and lines[0].endswith("(4 tasks)")
    assert lines[1].startswith("mse after 2 steps: ")
