"""Meta recipes end to end: task splits, the outer loop, metrics, reload, evaluate and adapt."""

import csv
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from workbench import runs
from workbench.cli import main
from workbench.meta.runner import build_learner, build_meta_model, load_learner
from workbench.meta.tasks import build_tasks
from workbench.recipe import load_recipe
from workbench.runner import run_recipe

OMNIGLOT = Path(os.environ.get("WORKBENCH_DATA", "")) / "omniglot"

SINUSOID = """\
kind: meta
algorithm: {algorithm}
seed: 4
tasks: {{source: sinusoid, shots: 5, queries: 5}}
model: {{builtin: mlp}}
inner: {{steps: 1, learning_rate: 0.01}}
outer: {{meta_batch_size: 10, iterations: 40}}
evaluation: {{tasks: 30, steps: [1, 3], every: 20, validation_tasks: 10}}
"""

GLYPHS = """\
kind: meta
algorithm: maml
seed: 5
tasks: {source: synthetic, name: glyphs, classes: 24, samples: 8, ways: 3, shots: 1, queries: 2, image_size: [16, 16], rotations: [0, 90], validation: 0.25, test: 0.25}
model: {builtin: conv4}
inner: {steps: 1, learning_rate: 0.1}
outer: {meta_batch_size: 2, iterations: 6}
evaluation: {tasks: 8, steps: [1, 2], every: 3, validation_tasks: 4}
"""


def _run(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return run_recipe(load_recipe(path), path, tmp_path / "runs")


def _validations(run_dir, metric):
    """(iteration, meta-validation figure) of each row of history.csv that has one."""
    with open(run_dir / runs.HISTORY_FILE, newline="") as file:
        return [(int(row["iteration"]), float(row[f"val_{metric}"])) for row in csv.DictReader(file) if row.get(f"val_{metric}")]


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("glyphs"), GLYPHS)


@pytest.mark.parametrize("algorithm", ["maml", "pretrain"])
def test_sinusoid_run_writes_the_metrics_of_design(tmp_path, algorithm):
    run_dir = _run(tmp_path, SINUSOID.format(algorithm=algorithm))
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert metrics["metric"] == "mse"
    assert [entry["steps"] for entry in metrics["evaluation"]] == [1, 3]
    assert {entry["tasks"] for entry in metrics["evaluation"]} == {30}
    # The best meta-validation is the lowest MSE of the validations that history.csv records.
    validations = _validations(run_dir, "mse")
    assert [iteration for iteration, _ in validations] == [20, 40]
    iteration, best = min(validations, key=lambda pair: pair[1])
    assert metrics["best_validation"]["iteration"] == iteration and metrics["best_validation"]["mean"] == pytest.approx(best, rel=1e-6)
    assert 0 < metrics["training_seconds"] and 0 < metrics["training_cpu_seconds"] < 4 * metrics["training_seconds"]
    assert json.loads((run_dir / runs.MANIFEST_FILE).read_text())["status"] == "finished"
    history = (run_dir / runs.HISTORY_FILE).read_text().splitlines()
    assert history[0].startswith("phase,iteration,loss,mse") and len(history) == 3
    assert any((run_dir / runs.LOGS_DIR).glob("events.out.tfevents.*"))


def test_multi_step_loss_options_reach_the_learner(tmp_path):
    text = SINUSOID.format(algorithm="maml").replace(
        "{steps: 1, learning_rate: 0.01}", "{steps: 2, learning_rate: 0.01, multi_step_loss: true, %s}"
    )
    for option, anneal in (("multi_step_anneal: null", None), ("multi_step_anneal: 300", 300), ("learn_rates: false", 5000)):
        path = tmp_path / "recipe.yaml"
        path.write_text(text % option)
        recipe = load_recipe(path)
        tasks = build_tasks(recipe.tasks, recipe.seed)
        learner = build_learner(recipe, build_meta_model(recipe, tasks), tasks)
        assert learner.multi_step_loss and learner.multi_step_anneal == anneal


def test_a_reloaded_run_reproduces_its_meta_test_figures(tmp_path):
    run_dir = _run(tmp_path, SINUSOID.format(algorithm="maml"))
    saved = json.loads((run_dir / runs.METRICS_FILE).read_text())["evaluation"]
    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    again = json.loads((run_dir / "evaluation.json").read_text())["evaluation"]
    for before, after in zip(saved, again, strict=True):
        assert after["mean"] == pytest.approx(before["mean"], rel=1e-5)
    assert "mse after 1 step: " in result.output

    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--steps", "5", "--steps", "1", "--steps", "0"])
    assert result.exit_code == 0, result.output
    longer = json.loads((run_dir / "evaluation.json").read_text())["evaluation"]
    assert [entry["steps"] for entry in longer] == [0, 1, 5] and {entry["tasks"] for entry in longer} == {30}
    assert longer[1]["mean"] == pytest.approx(saved[0]["mean"], rel=1e-5)
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(run_dir)])
    assert result.exit_code == 2 and "--data is for transfer runs" in result.output


# A meta learning rate high enough that meta-validation goes down and up again:
# its best (2.58 at iteration 50) is 14% below the last one (2.998 at 60).
OVERSHOOTING = """\
kind: meta
seed: 3
tasks: {source: sinusoid, shots: 5, queries: 5}
model: {builtin: mlp}
inner: {steps: 1, learning_rate: 0.01}
outer: {meta_batch_size: 5, iterations: 60, learning_rate: 0.03}
evaluation: {tasks: 10, steps: [1], every: 10, validation_tasks: 10}
"""


def test_model_keras_holds_the_best_validation_weights_not_the_last(tmp_path):
    run_dir = _run(tmp_path, OVERSHOOTING)
    validations = _validations(run_dir, "mse")
    best_iteration, best = min(validations, key=lambda pair: pair[1])
    assert best_iteration < 60 and validations[-1][1] > 1.1 * best, f"meta-validation no longer rises after its best: {validations}"
    assert json.loads((run_dir / runs.METRICS_FILE).read_text())["best_validation"]["iteration"] == best_iteration
    saved = keras.models.load_model(run_dir / runs.MODEL_FILE)
    checkpoint = keras.models.clone_model(saved)
    checkpoint.load_weights(run_dir / runs.CHECKPOINTS_DIR / runs.BEST_WEIGHTS)
    for got, want in zip(saved.get_weights(), checkpoint.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # The weights of that iteration: the same recipe stopped there (its last validation is then its best).
    folder = tmp_path / "stopped"
    folder.mkdir()
    stopped = _run(folder, OVERSHOOTING.replace("iterations: 60", f"iterations: {best_iteration}"))
    assert _validations(stopped, "mse") == validations[: best_iteration // 10]
    for got, want in zip(saved.get_weights(), keras.models.load_model(stopped / runs.MODEL_FILE).get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_no_class_appears_in_two_splits_and_labels_are_remapped(glyph_run):
    recipe = load_recipe(glyph_run / runs.RECIPE_FILE)
    tasks = build_tasks(recipe.tasks, recipe.seed)
    names = {split: set(sampler.class_names) for split, sampler in tasks.samplers.items()}
    assert not names["train"] & names["validation"] and not names["train"] & names["test"] and not names["validation"] & names["test"]
    base = {split: {name.split("@")[0] for name in members} for split, members in names.items()}
    assert not base["train"] & base["test"], "a rotated copy crossed the split"
    episodes = tasks.samplers["train"].sample(4)
    assert sorted(np.unique(episodes.support_y)) == [0, 1, 2] and sorted(np.unique(episodes.query_y)) == [0, 1, 2]


@pytest.mark.skipif(not (OMNIGLOT / "images_background_small2.zip").exists(), reason="Omniglot archives not under $WORKBENCH_DATA")
def test_omniglot_splits_use_different_alphabets_and_archives(tmp_path):
    text = (Path(__file__).parents[1] / "recipes" / "omniglot_maml.yaml").read_text()
    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "omniglot_maml.yaml")
    assert "images_background_small2.zip" in text
    tasks = build_tasks(recipe.tasks, recipe.seed)
    alphabets = {split: {name.split("/")[0] for name in sampler.class_names} for split, sampler in tasks.samplers.items()}
    assert not alphabets["validation"] & alphabets["test"]
    assert not alphabets["train"] & (alphabets["validation"] | alphabets["test"])
    assert tasks.classes["train"] == 136 * len(recipe.tasks.rotations)


def test_conv4_run_saves_a_standard_keras_model_and_its_adaptation_settings(glyph_run):
    model = keras.models.load_model(glyph_run / runs.MODEL_FILE, safe_mode=True)
    assert not any("Exact" in type(layer).__name__ for layer in model.layers)
    settings = json.loads((glyph_run / runs.ADAPTATION_FILE).read_text())
    assert settings["algorithm"] == "maml" and settings["ways"] == 3 and settings["input_shape"] == [16, 16, 1]
    _, _, learner = load_learner(runs.Run.open(glyph_run))
    for got, want in zip(learner.export_model().get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_adapt_writes_a_classifier_that_predict_uses(glyph_run, tmp_path):
    from workbench.data.glyphs import draw_glyphs

    images, labels = draw_glyphs([100, 101, 102], 2, (16, 16), seed=9)
    support = tmp_path / "support"
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = support / f"letter-{'abc'[label]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"{index}.png")
    output = tmp_path / "adapted.keras"
    result = CliRunner().invoke(main, ["adapt", str(glyph_run), "--support", str(support), "--steps", "2", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.is_file() and json.loads(output.with_suffix(".classes.json").read_text()) == ["letter-a", "letter-b", "letter-c"]
    adapted = keras.models.load_model(output).predict(images.astype("float32"), verbose=0)

    # The same adaptation, done here: two plain gradient steps on the support set's
    # cross-entropy from the run's model.keras, BatchNorm on the support batch's statistics.
    model = keras.models.load_model(glyph_run / runs.MODEL_FILE)
    rate = json.loads((glyph_run / runs.ADAPTATION_FILE).read_text())["inner_learning_rate"]
    x = tf.constant(images.astype("float32"))
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, model(x, training=True), from_logits=True))
        for variable, gradient in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables), strict=True):
            variable.assign(variable - rate * gradient)
    expected = tf.nn.softmax(model(x, training=True)).numpy()
    np.testing.assert_allclose(adapted, expected, atol=1e-4)

    index = 3
    image = support / f"letter-{'abc'[labels[index]]}" / f"{index}.png"
    predicted = CliRunner().invoke(main, ["predict", str(output), str(image), "--format", "json"])
    assert predicted.exit_code == 0, predicted.output
    (printed,) = json.loads(predicted.stdout)
    ranked = np.argsort(adapted[index])[::-1]
    assert [entry["class"] for entry in printed["predictions"]] == [f"letter-{'abc'[i]}" for i in ranked]
    refused = CliRunner().invoke(main, ["adapt", str(glyph_run), "--support", str(support), "--output", str(output)])
    assert refused.exit_code == 2 and "already exists" in refused.output


def test_tfds_tasks_split_classes_of_a_dataset(tmp_path):
    import tensorflow_datasets as tfds

    path = tmp_path / "mnist.yaml"
    path.write_text(
        "kind: meta\n"
        "tasks: {source: tfds, name: mnist, ways: 2, shots: 1, queries: 2, validation: 0.2, test: 0.2, image_size: [28, 28]}\n"
        "model: {builtin: conv4}\n"
    )
    with tfds.testing.mock_data(num_examples=200):
        distribution = build_tasks(load_recipe(path).tasks, seed=0)
    names = [set(sampler.class_names) for sampler in distribution.samplers.values()]
    assert sum(len(n) for n in names) == len(set().union(*names)) == 10
    episodes = distribution.samplers["test"].sample(3)
    assert episodes.support_x.shape == (3, 2, 28, 28, 1) and episodes.query_y.shape == (3, 4)
