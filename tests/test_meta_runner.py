"""Meta recipes end to end: task splits, the outer loop, metrics, reload, evaluate and adapt."""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
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


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("glyphs"), GLYPHS)


@pytest.mark.parametrize("algorithm", ["maml", "pretrain"])
def test_sinusoid_run_writes_the_metrics_of_design(tmp_path, algorithm):
    run_dir = _run(tmp_path, SINUSOID.format(algorithm=algorithm))
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert metrics["metric"] == "mse"
    assert [entry["steps"] for entry in metrics["evaluation"]] == [1, 3]
    for entry in metrics["evaluation"]:
        assert entry["tasks"] == 30 and entry["mean"] > 0 and entry["ci95"] > 0
    assert metrics["best_validation"]["iteration"] in (20, 40)
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
    probabilities = keras.models.load_model(output).predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)
    image = next((support / "letter-b").iterdir())
    predicted = CliRunner().invoke(main, ["predict", str(output), str(image)])
    assert predicted.exit_code == 0 and predicted.output.startswith(f"{image}: letter-")
    refused = CliRunner().invoke(main, ["adapt", str(glyph_run), "--support", str(support), "--output", str(output)])
    assert refused.exit_code == 2 and "already exists" in refused.output


def test_tfds_tasks_split_classes_of_a_dataset():
    import tensorflow_datasets as tfds

    from workbench.recipe.schema import Tasks

    tasks = Tasks(source="tfds", name="mnist", ways=2, shots=1, queries=2, validation=0.2, test=0.2, image_size=[28, 28])
    with tfds.testing.mock_data(num_examples=200):
        distribution = build_tasks(tasks, seed=0)
    names = [set(sampler.class_names) for sampler in distribution.samplers.values()]
    assert sum(len(n) for n in names) == len(set().union(*names)) == 10
    episodes = distribution.samplers["test"].sample(3)
    assert episodes.support_x.shape == (3, 2, 28, 28, 1) and episodes.query_y.shape == (3, 4)
