"""Several heads on one base, and domain adaptation, in transfer recipes: real tiny runs on a grouped folder of glyphs."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from workbench import runs
from workbench.cli import main
from workbench.data.sources import glyph_classes
from workbench.domain.adversarial import DomainAdversarialTrainer, ReversalSchedule
from workbench.domain.schedule import reversal_weight
from workbench.heads import compile_model, outputs_of
from workbench.recipe import load_recipe
from workbench.transfer import build_transfer_model

GROUPS = {"north": ("c0", "c1", "c2"), "south": ("c3", "c4")}
IMAGES_PER_CLASS = 16

MULTITASK = """\
kind: transfer
name: multitask
seed: 5
data: {{source: folder, path: {path}, image_size: [16, 16], channels: 1, batch_size: 32, validation: 0.25, test: 0.25}}
base: {{source: builtin, name: conv4, weights: none}}
freeze: {{layers: none, batchnorm: train}}
heads:
  - {{name: character, labels: class}}
  - {{name: region, labels: group, units: [8], loss_weight: 0.5, metrics: [accuracy, top5_accuracy]}}
schedule:
  - {{epochs: 2, learning_rate: 3.0e-3}}
"""

DOMAIN = """\
kind: transfer
name: domain
seed: 5
data: {{source: folder, path: {path}, image_size: [16, 16], channels: 3, batch_size: 16, validation: 0.25, test: 0.25}}
base: {{source: builtin, name: conv4, weights: none}}
freeze: {{layers: none, batchnorm: train}}
domain_adaptation:
  method: {method}
  target: {{source: folder, path: {path}, style: textured, validation: 0.25, test: 0.25}}
  weight: 0.5
  units: [8]
schedule:
  - {{epochs: 2, learning_rate: 3.0e-3}}
"""


@pytest.fixture(scope="module")
def grouped_folder(tmp_path_factory):
    """Class folders inside group folders (`north/c0/...`), dark glyph strokes on white as Omniglot draws them."""
    root = tmp_path_factory.mktemp("grouped") / "glyphs"
    names = [name for members in GROUPS.values() for name in members]
    images = glyph_classes(range(len(names)), IMAGES_PER_CLASS, (16, 16), 1, seed=0)
    for group, members in GROUPS.items():
        for name in members:
            folder = root / group / name
            folder.mkdir(parents=True)
            for index, image in enumerate(images.by_class()[names.index(name)]):
                Image.fromarray(255 - image[..., 0]).save(folder / f"{index:02d}.png")
    return root


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _run(recipe_path: Path, runs_dir: Path, *extra: str) -> Path:
    result = CliRunner().invoke(main, ["run", str(recipe_path), "--runs-dir", str(runs_dir), *extra])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def multitask_run(grouped_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multitask")
    recipe_path = _write(folder, "multitask.yaml", MULTITASK.format(path=grouped_folder))
    return _run(recipe_path, folder / "runs"), recipe_path


def test_each_head_is_scored_on_its_own_labels_and_the_loss_weights_scale_their_own_losses(multitask_run):
    run_dir, _ = multitask_run
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    character, region = metrics["heads"]["character"]["test"], metrics["heads"]["region"]["test"]
    assert set(region) == {"loss", "accuracy", "top5_accuracy"} and set(character) == {"loss", "accuracy"}
    assert region["top5_accuracy"] == 1.0  # two regions: both are always in the top five
    # The total is the character loss plus half the region loss; the other way round it would differ.
    # (The test split is one batch: Keras averages the total and the per-head losses over batches differently.)
    assert metrics["test"]["loss"] == pytest.approx(character["loss"] + 0.5 * region["loss"], rel=1e-5)
    assert abs(character["loss"] - region["loss"]) > 1e-3
    assert metrics["test"]["accuracy"] == character["accuracy"]  # the first head is the primary task
    names = json.loads((run_dir / runs.CLASSES_FILE).read_text())
    assert names == {"character": [f"{g}/{c}" for g, members in GROUPS.items() for c in members], "region": ["north", "south"]}
    history = (run_dir / runs.HISTORY_FILE).read_text().splitlines()[0]
    assert "val_region_accuracy" in history and "val_character_loss" in history


def test_evaluate_reports_every_head_and_predict_prints_every_head(multitask_run, grouped_folder):
    run_dir, _ = multitask_run
    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "head character" in result.stdout and "head region" in result.stdout
    report = json.loads((run_dir / runs.EVALUATION_FILE).read_text())
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    for head in ("character", "region"):
        confusion = np.array(report["heads"][head]["confusion_matrix"])
        assert confusion.sum() == metrics["test"]["examples"]
        assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["heads"][head]["test"]["accuracy"], abs=1e-6)

    image = next((grouped_folder / "south" / "c4").iterdir())
    result = CliRunner().invoke(main, ["predict", str(run_dir), str(image), "--format", "json"])
    assert result.exit_code == 0, result.output
    (printed,) = json.loads(result.stdout)
    assert set(printed["predictions"]) == {"character", "region"}
    assert {entry["class"] for entry in printed["predictions"]["region"]} == {"north", "south"}
    text = CliRunner().invoke(main, ["predict", str(run_dir), str(image)])
    assert "character: " in text.stdout and "; region: " in text.stdout


def test_a_multi_head_model_reloads_in_a_fresh_process_with_identical_outputs(multitask_run, tmp_path):
    run_dir, recipe_path = multitask_run
    recipe = load_recipe(recipe_path)
    keras.utils.set_random_seed(1)
    model = build_transfer_model(recipe, (16, 16, 1), {"character": 5, "region": 2})
    path = tmp_path / "multi.keras"
    runs.save_model(model, path)
    images = np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 1)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "outputs = model.predict(np.load(sys.argv[2]), verbose=0)\n"
        "np.savez(sys.argv[3], **outputs)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "images.npy"), str(tmp_path / "out.npz")], check=True)
    reloaded = np.load(tmp_path / "out.npz")
    expected = model.predict(images, verbose=0)
    assert set(reloaded.files) == {"character", "region"}
    for head in ("character", "region"):
        np.testing.assert_allclose(reloaded[head], expected[head], rtol=0, atol=1e-6)


def test_a_dann_run_reports_both_domains_and_saves_a_plain_classifier(grouped_folder, tmp_path):
    recipe_path = _write(tmp_path, "domain.yaml", DOMAIN.format(path=grouped_folder, method="dann"))
    run_dir = _run(recipe_path, tmp_path / "runs")
    domain = json.loads((run_dir / runs.METRICS_FILE).read_text())["domain"]
    assert domain["method"] == "dann"
    assert domain["source"]["examples"] == domain["target"]["examples"] == 5 * 4
    for key in ("before", "after"):
        assert 0.0 <= domain["a_distance"][key] <= 2.0
    history = (run_dir / runs.HISTORY_FILE).read_text().splitlines()[0]
    assert "domain_loss" in history and "val_domain_loss" not in history
    model = keras.saving.load_model(run_dir / runs.MODEL_FILE)
    assert [layer.name for layer in model.layers if "domain" in layer.name or "reversal" in layer.name] == []


def test_the_reversal_weight_follows_the_schedule_over_every_step_of_training(grouped_folder, tmp_path):
    recipe = load_recipe(_write(tmp_path, "domain.yaml", DOMAIN.format(path=grouped_folder, method="dann")))
    keras.utils.set_random_seed(0)
    classifier = build_transfer_model(recipe, (16, 16, 3), 5)
    trainer = DomainAdversarialTrainer(classifier, [4])
    compile_model(trainer, recipe)
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32"), rng.integers(0, 5, 32)
    target = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(trainer.reversal.weight.numpy()))

    schedule = ReversalSchedule(trainer.reversal, 0.5, steps_before=4, steps_per_epoch=2, total_steps=8)
    batches = [((source[0][i : i + 16], source[1][i : i + 16]), target[i : i + 16]) for i in (0, 16)]
    trainer.fit(_repeat(batches), steps_per_epoch=2, epochs=2, callbacks=[schedule, Watch()], shuffle=False, verbose=0)
    assert seen == pytest.approx([0.5 * reversal_weight(step / 8) for step in (4, 5, 6, 7)])


def _repeat(batches):
    while True:
        yield from batches


def test_heads_labels_and_domain_targets_are_checked_before_training(grouped_folder, tmp_path):
    both = _write(tmp_path, "both.yaml", MULTITASK.format(path=grouped_folder) + "head: {dropout: 0.1}\n")
    result = CliRunner().invoke(main, ["validate", str(both)])
    assert result.exit_code == 2 and "heads: give head (one output) or heads (several), not both" in result.output

    twice = _write(tmp_path, "twice.yaml", MULTITASK.format(path=grouped_folder).replace("name: region", "name: character"))
    result = CliRunner().invoke(main, ["validate", str(twice)])
    assert result.exit_code == 2 and "'character' is given twice" in result.output

    gray = _write(tmp_path, "gray.yaml", DOMAIN.format(path=grouped_folder, method="none").replace("channels: 3", "channels: 1"))
    result = CliRunner().invoke(main, ["validate", str(gray)])
    assert result.exit_code == 2 and "target.style: style textured draws colour images: the source data needs channels: 3" in result.output

    other = _write(
        tmp_path,
        "other.yaml",
        DOMAIN.format(path=grouped_folder, method="dann").replace("style: textured,", "style: textured, batch_size: 4,"),
    )
    result = CliRunner().invoke(main, ["validate", str(other)])
    assert result.exit_code == 2 and "domain_adaptation.target.batch_size: must be the source's" in result.output


def test_a_labels_file_names_the_class_it_misses(grouped_folder, tmp_path):
    labels = _write(tmp_path, "labels.csv", "class,label\nnorth/c0,round\nnorth/c1,square\n")
    recipe = MULTITASK.format(path=grouped_folder).replace("labels: group", f"labels: {{file: {labels}}}")
    recipe_path = _write(tmp_path, "file.yaml", recipe)
    result = CliRunner().invoke(main, ["run", str(recipe_path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert f"{labels}: no label for class 'north/c2' (3 classes have none); add a row north/c2,LABEL" in result.output


def test_outputs_of_one_head_leave_the_data_as_it_is(grouped_folder, tmp_path):
    recipe = load_recipe(_write(tmp_path, "one.yaml", DOMAIN.format(path=grouped_folder, method="none")))
    from workbench.data.datasets import load_image_splits

    data = load_image_splits(recipe.data, recipe.seed)
    outputs, same = outputs_of(recipe, data)
    assert same is data and outputs.sizes == 5 and outputs.names_file == data.class_names


def test_a_multi_head_run_exports_its_heads_side_by_side_and_the_file_matches_every_head(multitask_run, tmp_path):
    run_dir, _ = multitask_run
    output = tmp_path / "multi.onnx"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "onnx", "--output", str(output)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "multi.onnx.export.json").read_text())
    names = json.loads((run_dir / runs.CLASSES_FILE).read_text())
    assert record["classes"] == [f"character: {name}" for name in names["character"]] + ["region: north", "region: south"]
    assert "character [0, 5), region [5, 7)" in record["output"]["meaning"]
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] <= 1e-5
    # The first head's accuracy, as the run measured it on the same split.
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert record["parity"]["accuracy_keras"] == pytest.approx(metrics["heads"]["character"]["test"]["accuracy"], abs=1e-6)
