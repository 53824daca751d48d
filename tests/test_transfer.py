"""Transfer recipes end to end on a tiny keras.applications model with weights from a file."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main
from workbench.errors import ModelError
from workbench.models import freezing
from workbench.models.bases import BACKBONE, build_backbone, cut
from workbench.recipe import load_recipe
from workbench.recipe.schema import Base
from workbench.runner import run_recipe

SHAPE = (32, 32, 3)
APPLICATION = "MobileNetV3Small"


def _application():
    return keras.applications.MobileNetV3Small(input_shape=SHAPE, include_top=False, weights=None, pooling="avg")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A randomly initialised application's weights, BatchNorm statistics made non-trivial."""
    keras.utils.set_random_seed(0)
    model = _application()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape).astype("float32") * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=layer.moving_variance.shape).astype("float32"))
    path = tmp_path_factory.mktemp("weights") / "mobilenetv3small.weights.h5"
    model.save_weights(path)
    return path, [w.copy() for w in model.get_weights()], model


RECIPE = """\
kind: transfer
name: tiny
seed: 3
data:
  source: synthetic
  name: glyphs
  classes: 3
  samples: 12
  validation: 0.25
  test: 0.25
  image_size: [32, 32]
  channels: 3
  batch_size: 8
  augment: {{flip: horizontal}}
base: {{source: applications, name: MobileNetV3Small, weights: {weights}}}
freeze: {{layers: all, batchnorm: frozen}}
head: {{units: [8], dropout: 0.1}}
schedule:
  - {{name: head, epochs: 2, learning_rate: 1.0e-2}}
  - {{name: fine-tune, unfreeze: all, epochs: 1, learning_rate: 1.0e-3, lr_schedule: cosine}}
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, weights_file):
    folder = tmp_path_factory.mktemp("transfer")
    recipe_path = folder / "tiny.yaml"
    recipe_path.write_text(RECIPE.format(weights=weights_file[0]))
    run_dir = run_recipe(load_recipe(recipe_path), recipe_path, folder / "runs")
    return run_dir, recipe_path


def _network(backbone):
    return next(layer for layer in backbone.layers if isinstance(layer, keras.Model))


def test_weights_loaded_from_a_file_path_equal_the_files_weights(weights_file):
    path, expected, _ = weights_file
    base = Base(source="applications", name=APPLICATION, weights=str(path))
    backbone = build_backbone(base, SHAPE)
    loaded = _network(backbone).get_weights()
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_that_do_not_fit_are_a_clear_error(weights_file, tmp_path):
    base = Base(source="applications", name="MobileNetV2", weights=str(weights_file[0]))
    with pytest.raises(ModelError, match="do not fit keras.applications.MobileNetV2"):
        build_backbone(base, SHAPE)


def test_each_selector_freezes_exactly_the_layers_it_names(weights_file):
    backbone = build_backbone(Base(source="applications", name=APPLICATION, weights="none"), SHAPE)
    layers = freezing.selectable_layers(backbone)
    names = [layer.name for layer in layers]
    with_weights = [layer for layer in layers if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]

    def frozen_after(selector):
        freezing.freeze(backbone, selector, "train")
        return {layer.name for layer in layers if not layer.trainable}

    assert frozen_after("all") == set(names)
    assert frozen_after("none") == set()
    assert frozen_after({"last": 5}) == set(names[-5:])
    assert frozen_after({"until": names[10]}) == set(names[:11])
    assert frozen_after({"match": "^expanded_conv_1_"}) == {n for n in names if n.startswith("expanded_conv_1_")}
    # Frozen layers contribute no trainable weights; the rest all do.
    freezing.freeze(backbone, {"last": 5}, "train")
    trainable_ids = {id(v) for v in backbone.trainable_weights}
    for layer in with_weights:
        assert all((id(v) in trainable_ids) == (layer.name not in names[-5:]) for v in layer.trainable_weights + [])
    # Under batchnorm: frozen, no BatchNormalization layer trains, whatever is selected.
    freezing.freeze(backbone, "none", "frozen")
    assert all(not layer.trainable for layer in layers if isinstance(layer, keras.layers.BatchNormalization))
    assert all(layer.trainable for layer in layers if not isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize(
    "selector, message",
    [({"until": "expanded_conv_projekt"}, "near matches: expanded_conv_project"), ({"match": "^nothing$"}, "matches no layer")],
)
def test_selectors_that_name_nothing_list_near_matches(selector, message):
    backbone = build_backbone(Base(source="applications", name=APPLICATION, weights="none"), SHAPE)
    with pytest.raises(ModelError, match=message):
        freezing.freeze(backbone, selector, "frozen")


def test_cut_at_a_nested_layer_keeps_the_preprocessing_in_front():
    backbone = build_backbone(Base(source="applications", name="MobileNetV2", weights="none"), SHAPE)
    cut_model = cut(backbone, "block_4_add")
    assert cut_model.layers[1].name.startswith("preprocess")
    assert cut_model.output_shape[-1] == backbone.get_layer(_network(backbone).name).get_layer("block_4_add").output.shape[-1]
    with pytest.raises(ModelError, match="near matches: block_4_add"):
        cut(backbone, "block_4_ad")


def test_a_run_leaves_the_artifacts_of_design(finished_run):
    run_dir, _ = finished_run
    manifest = json.loads((run_dir / runs.MANIFEST_FILE).read_text())
    assert manifest["status"] == "finished" and manifest["seed"] == 3 and "tensorflow" in manifest["versions"]
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert [phase["name"] for phase in metrics["phases"]] == ["head", "fine-tune"]
    assert {"val_loss", "val_accuracy", "epochs"} <= set(metrics["phases"][0])
    assert 0 <= metrics["test"]["accuracy"] <= 1
    history = (run_dir / runs.HISTORY_FILE).read_text().splitlines()
    assert history[0].startswith("phase,epoch") and len(history) == 1 + 3
    assert [row.split(",")[0] for row in history[1:]] == ["head", "head", "fine-tune"]
    assert json.loads((run_dir / runs.CLASSES_FILE).read_text()) == ["glyph-0", "glyph-1", "glyph-2"]
    checkpoints = sorted(p.name for p in (run_dir / runs.CHECKPOINTS_DIR).iterdir())
    assert checkpoints[:3] == ["phase-00-head.best.npz", "phase-01-fine-tune.best.npz", "resume.json"]
    assert checkpoints[3].startswith("state-") and len(checkpoints) == 4
    assert any((run_dir / runs.LOGS_DIR).rglob("events.out.tfevents.*"))
    assert load_recipe(run_dir / runs.RECIPE_FILE).base.weights.endswith("mobilenetv3small.weights.h5")


def test_batchnorm_statistics_are_bit_identical_after_fine_tuning_everything(finished_run, weights_file):
    run_dir, _ = finished_run
    model = keras.models.load_model(run_dir / runs.MODEL_FILE)
    network = _network(model.get_layer(BACKBONE))
    reference = weights_file[2]
    compared = 0
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            original = reference.get_layer(layer.name)
            np.testing.assert_array_equal(layer.moving_mean.numpy(), original.moving_mean.numpy())
            np.testing.assert_array_equal(layer.moving_variance.numpy(), original.moving_variance.numpy())
            compared += 1
    assert compared > 10
    # ...while the convolutions did train in the fine-tune phase.
    conv = next(layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D))
    assert not np.array_equal(conv.kernel.numpy(), reference.get_layer(conv.name).kernel.numpy())


def test_model_reloads_in_a_fresh_process_with_the_same_predictions(finished_run, tmp_path):
    run_dir, _ = finished_run
    images = np.random.default_rng(1).uniform(0, 255, size=(6, *SHAPE)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, workbench
        model = keras.models.load_model({str(run_dir / runs.MODEL_FILE)!r})
        np.save({str(tmp_path / "out.npy")!r}, model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, capture_output=True)
    in_process = keras.models.load_model(run_dir / runs.MODEL_FILE).predict(images, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), in_process, atol=1e-6)


def test_saved_predictions_match_the_model_before_saving(weights_file, tmp_path):
    from workbench.transfer import build_transfer_model

    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(RECIPE.format(weights=weights_file[0]))
    recipe = load_recipe(recipe_path)
    model = build_transfer_model(recipe, SHAPE, 3)
    images = np.random.default_rng(2).uniform(0, 255, size=(4, *SHAPE)).astype("float32")
    before = model.predict(images, verbose=0)
    runs.save_model(model, tmp_path / "model.keras")
    after = keras.models.load_model(tmp_path / "model.keras").predict(images, verbose=0)
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_evaluate_and_predict_commands(finished_run, tmp_path):
    from PIL import Image

    run_dir, _ = finished_run
    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test: ") and "confusion matrix" in result.output
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert len(report["confusion_matrix"]) == 3 and sum(map(sum, report["confusion_matrix"])) == report["examples"]
    meta_only = CliRunner().invoke(main, ["evaluate", str(run_dir), "--steps", "3"])
    assert meta_only.exit_code == 2 and "--steps and --tasks are for meta runs" in meta_only.output
    image = tmp_path / "glyph.png"
    Image.fromarray(np.zeros((40, 40), "uint8")).save(image)
    result = CliRunner().invoke(main, ["predict", str(run_dir), str(image), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{image}: glyph-") and result.output.count("glyph-") == 2
    missing = CliRunner().invoke(main, ["predict", str(run_dir), str(tmp_path / "absent.png")])
    assert missing.exit_code == 2 and "No such image file" in missing.output


def test_a_finished_run_is_the_base_of_the_next_recipe(finished_run, tmp_path):
    run_dir, recipe_path = finished_run
    text = recipe_path.read_text()
    chained = (
        text.split("base:")[0]
        + f"base: {{source: run, path: {run_dir}}}\nfreeze: {{layers: all}}\nschedule:\n  - {{name: head, epochs: 1}}\n"
    )
    (tmp_path / "next.yaml").write_text(chained)
    from workbench.transfer import build_transfer_model

    recipe = load_recipe(tmp_path / "next.yaml")
    model = build_transfer_model(recipe, SHAPE, 3)
    previous = keras.models.load_model(run_dir / runs.MODEL_FILE).get_layer(BACKBONE)
    for got, want in zip(model.get_layer(BACKBONE).get_weights(), previous.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not model.get_layer(BACKBONE).trainable_weights


def test_validate_plan_prints_each_phase(finished_run):
    _, recipe_path = finished_run
    result = CliRunner().invoke(main, ["validate", "--plan", str(recipe_path)])
    assert result.exit_code == 0, result.output
    head, fine_tune = [line for line in result.output.splitlines() if line.strip().startswith("phase")]
    assert "BatchNorm frozen" in head and "adam learning rate 0.01" in head
    trainable = [int(line.split(" trainable")[0].split()[-1].replace(",", "")) for line in (head, fine_tune)]
    assert trainable[1] > trainable[0]


BASE_RECIPE = """\
kind: transfer
name: tiny-base
seed: 1
data: {source: synthetic, name: glyphs, classes: 4, samples: 8, image_size: [16, 16], channels: 1, validation: 0.25}
base: {source: builtin, name: conv4, weights: none}
freeze: {layers: none, batchnorm: train}
schedule: [{name: train, epochs: 1}]
"""

CHILD_RECIPE = """\
kind: transfer
name: tiny-child
seed: 2
data: {source: synthetic, name: glyphs, classes: 3, first_class: 100, samples: 8, image_size: [16, 16], channels: 1, validation: 0.25}
base: {source: recipe, path: base.yaml}
schedule: [{name: head, epochs: 1}]
"""


def test_a_recipe_base_is_run_once_then_reused_until_it_changes(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE_RECIPE)
    (tmp_path / "child.yaml").write_text(CHILD_RECIPE)
    runs_dir = tmp_path / "runs"
    for _ in range(2):
        run_recipe(load_recipe(tmp_path / "child.yaml"), tmp_path / "child.yaml", runs_dir)
    assert len(list(runs_dir.glob("tiny-base-*"))) == 1 and len(list(runs_dir.glob("tiny-child-*"))) == 2
    (tmp_path / "base.yaml").write_text(BASE_RECIPE.replace("seed: 1", "seed: 9"))
    run_recipe(load_recipe(tmp_path / "child.yaml"), tmp_path / "child.yaml", runs_dir)
    assert len(list(runs_dir.glob("tiny-base-*"))) == 2
