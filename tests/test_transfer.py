"""Transfer recipes end to end: a tiny keras.applications model with weights from a file, and conv4 runs on glyphs.

Runs go through the `workbench` CLI and are checked from what they leave in
their run directories: `model.keras` loaded with Keras, `metrics.json`,
`history.csv` and the checkpoints. Expected layer sets are written out here by
name, never computed by the code under test.
"""

import csv
import io
import json
import math
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main
from workbench.errors import ModelError
from workbench.models.bases import BACKBONE, build_backbone, cut
from workbench.recipe import load_recipe
from workbench.transfer import build_transfer_model

SHAPE = (32, 32, 3)
APPLICATION = "MobileNetV3Small"


def _application():
    return keras.applications.MobileNetV3Small(input_shape=SHAPE, include_top=False, weights=None, pooling="avg")


def _run(recipe_path, runs_dir):
    """`workbench run RECIPE`; the run directory it prints."""
    result = CliRunner().invoke(main, ["run", str(recipe_path), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def _write(folder, name, text):
    path = Path(folder) / name
    path.write_text(text)
    return path


def _model(run_dir):
    return keras.models.load_model(run_dir / runs.MODEL_FILE)


def _metrics(run_dir):
    return json.loads((run_dir / runs.METRICS_FILE).read_text())


def _history(run_dir, phase=None):
    with open(run_dir / runs.HISTORY_FILE, newline="") as file:
        rows = list(csv.DictReader(file))
    return [row for row in rows if phase is None or row["phase"] == phase]


def _leaves(model):
    """The layers of `model` that are not models, nested models flattened in order, inputs left out."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def _network(backbone):
    return next(layer for layer in backbone.layers if isinstance(layer, keras.Model))


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
base: {{source: applications, name: {name}, weights: {weights}}}
freeze: {{layers: {layers}, batchnorm: {batchnorm}}}
head: {{units: [8], dropout: 0.1}}
schedule:
  - {{name: head, epochs: 2, learning_rate: 1.0e-2}}
  - {{name: fine-tune, unfreeze: all, epochs: 1, learning_rate: 1.0e-3, lr_schedule: cosine}}
"""


def _recipe(folder, weights="none", name=APPLICATION, layers="all", batchnorm="frozen"):
    """The tiny MobileNet recipe, loaded as the runner loads it."""
    return load_recipe(_write(folder, "tiny.yaml", RECIPE.format(weights=weights, name=name, layers=layers, batchnorm=batchnorm)))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, weights_file):
    folder = tmp_path_factory.mktemp("transfer")
    recipe_path = _write(folder, "tiny.yaml", RECIPE.format(weights=weights_file[0], name=APPLICATION, layers="all", batchnorm="frozen"))
    return _run(recipe_path, folder / "runs"), recipe_path


def test_weights_loaded_from_a_file_path_equal_the_files_weights(weights_file, tmp_path):
    path, expected, _ = weights_file
    model = build_transfer_model(_recipe(tmp_path, weights=path), SHAPE, 3)
    loaded = _network(model.get_layer(BACKBONE)).get_weights()
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_that_do_not_fit_are_a_clear_error(weights_file, tmp_path):
    with pytest.raises(ModelError, match="do not fit keras.applications.MobileNetV2"):
        build_transfer_model(_recipe(tmp_path, weights=weights_file[0], name="MobileNetV2"), SHAPE, 3)


# The layers of MobileNetV3Small's second inverted-residual block, by name.
EXPANDED_CONV_1 = {
    "expanded_conv_1_expand",
    "expanded_conv_1_expand_bn",
    "expanded_conv_1_depthwise_pad",
    "expanded_conv_1_depthwise",
    "expanded_conv_1_depthwise_bn",
    "expanded_conv_1_project",
    "expanded_conv_1_project_bn",
}


def test_a_match_selector_freezes_the_named_layers_inside_a_nested_application(tmp_path):
    model = build_transfer_model(_recipe(tmp_path, layers="{match: ^expanded_conv_1_}", batchnorm="train"), SHAPE, 3)
    layers = list(_leaves(model.get_layer(BACKBONE)))
    assert {layer.name for layer in layers if not layer.trainable} == EXPANDED_CONV_1
    assert sum(1 for layer in layers if layer.trainable and layer.weights) > 50


def test_batchnorm_frozen_freezes_every_batchnorm_layer_whatever_is_selected(tmp_path):
    model = build_transfer_model(_recipe(tmp_path, layers="none"), SHAPE, 3)
    layers = list(_leaves(model.get_layer(BACKBONE)))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 10 and not any(layer.trainable for layer in norms)
    assert all(layer.trainable for layer in layers if layer not in norms)


@pytest.mark.parametrize(
    "selector, message",
    [("{until: expanded_conv_projekt}", "near matches: expanded_conv_project"), ("{match: ^nothing$}", "matches no layer")],
)
def test_selectors_that_name_nothing_list_near_matches(tmp_path, selector, message):
    with pytest.raises(ModelError, match=message):
        build_transfer_model(_recipe(tmp_path, layers=selector), SHAPE, 3)


def test_cut_at_a_nested_layer_keeps_the_preprocessing_in_front(tmp_path):
    backbone = build_backbone(_recipe(tmp_path, name="MobileNetV2").base, SHAPE)
    cut_model = cut(backbone, "block_4_add")
    assert cut_model.layers[1].name.startswith("preprocess")
    assert cut_model.output_shape[-1] == _network(backbone).get_layer("block_4_add").output.shape[-1]
    with pytest.raises(ModelError, match="near matches: block_4_add"):
        cut(backbone, "block_4_ad")


def test_a_run_leaves_the_artifacts_of_design(finished_run):
    run_dir, _ = finished_run
    manifest = json.loads((run_dir / runs.MANIFEST_FILE).read_text())
    assert manifest["status"] == "finished" and manifest["seed"] == 3 and "tensorflow" in manifest["versions"]
    metrics = _metrics(run_dir)
    assert [phase["name"] for phase in metrics["phases"]] == ["head", "fine-tune"]
    assert {"val_loss", "val_accuracy", "epochs", "best_epoch", "monitor"} <= set(metrics["phases"][0])
    assert set(metrics["test"]) == {"loss", "accuracy", "examples"}
    for key in ("training_seconds", "training_cpu_seconds"):
        assert all(phase[key] > 0 for phase in metrics["phases"])
        assert metrics[key] == pytest.approx(sum(phase[key] for phase in metrics["phases"]))
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
    network = _network(_model(run_dir).get_layer(BACKBONE))
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
    in_process = _model(run_dir).predict(images, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), in_process, atol=1e-6)


def test_saved_predictions_match_the_model_before_saving(weights_file, tmp_path):
    model = build_transfer_model(_recipe(tmp_path, weights=weights_file[0]), SHAPE, 3)
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
    assert result.stdout.startswith("test: ") and "confusion matrix" in result.stdout
    report = json.loads((run_dir / runs.EVALUATION_FILE).read_text())
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (3, 3) and confusion.sum() == report["examples"]
    # The run's own test figures (Keras' metric during the run), against the confusion matrix of the reloaded model.
    test = _metrics(run_dir)["test"]
    assert test["examples"] == report["examples"]
    assert test["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-6)
    assert test["loss"] == pytest.approx(report["loss"], rel=1e-4)
    meta_only = CliRunner().invoke(main, ["evaluate", str(run_dir), "--steps", "3"])
    assert meta_only.exit_code == 2 and "--steps and --tasks are for meta runs" in meta_only.output

    image = tmp_path / "glyph.png"
    Image.fromarray(np.zeros((40, 40), "uint8")).save(image)
    result = CliRunner().invoke(main, ["predict", str(run_dir), str(image), "--top-k", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    (printed,) = json.loads(result.stdout)
    # A black image is black at any size: the model's own top two on it.
    probabilities = _model(run_dir).predict(np.zeros((1, *SHAPE), "float32"), verbose=0)[0]
    names = json.loads((run_dir / runs.CLASSES_FILE).read_text())
    top = np.argsort(probabilities)[::-1][:2]
    assert printed["image"] == str(image)
    assert [entry["class"] for entry in printed["predictions"]] == [names[i] for i in top]
    assert [entry["probability"] for entry in printed["predictions"]] == pytest.approx(probabilities[top], abs=1e-5)
    missing = CliRunner().invoke(main, ["predict", str(run_dir), str(tmp_path / "absent.png")])
    assert missing.exit_code == 2 and "No such image file" in missing.output


def test_a_finished_run_is_the_base_of_the_next_recipe(finished_run, tmp_path):
    run_dir, recipe_path = finished_run
    text = recipe_path.read_text()
    chained = (
        text.split("base:")[0]
        + f"base: {{source: run, path: {run_dir}}}\nfreeze: {{layers: all}}\nschedule:\n  - {{name: head, epochs: 1}}\n"
    )
    model = build_transfer_model(load_recipe(_write(tmp_path, "next.yaml", chained)), SHAPE, 3)
    previous = _model(run_dir).get_layer(BACKBONE)
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
    _write(tmp_path, "base.yaml", BASE_RECIPE)
    child = _write(tmp_path, "child.yaml", CHILD_RECIPE)
    runs_dir = tmp_path / "runs"
    for _ in range(2):
        _run(child, runs_dir)
    assert len(list(runs_dir.glob("tiny-base-*"))) == 1 and len(list(runs_dir.glob("tiny-child-*"))) == 2
    _write(tmp_path, "base.yaml", BASE_RECIPE.replace("seed: 1", "seed: 9"))
    _run(child, runs_dir)
    assert len(list(runs_dir.glob("tiny-base-*"))) == 2


# ------------------------------------------------- conv4 runs on a trained base

# A conv4 trained on other glyph classes, BatchNorm statistics included: the base
# of the runs below, whose frozen layers must keep exactly these weights.
CONV4_BASE = """\
kind: transfer
name: conv4-base
seed: 1
data: {source: synthetic, name: glyphs, classes: 4, first_class: 10, samples: 12, image_size: [16, 16], channels: 1, validation: 0.25, batch_size: 8}
base: {source: builtin, name: conv4, weights: none}
freeze: {layers: none, batchnorm: train}
schedule: [{name: all, epochs: 1}]
"""

ON_CONV4_BASE = """\
kind: transfer
name: on-conv4
seed: 2
data: {{source: synthetic, name: glyphs, classes: 3, first_class: 30, samples: 12, image_size: [16, 16], channels: 1, validation: 0.25, test: 0.25, batch_size: 8}}
base: {{source: run, path: {base}}}
freeze: {{layers: {layers}, batchnorm: {batchnorm}}}
{rest}
"""


@pytest.fixture(scope="module")
def conv4_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conv4-base")
    return _run(_write(folder, "base.yaml", CONV4_BASE), folder / "runs")


def _on_conv4_base(folder, base, layers, rest, batchnorm="train"):
    return _run(
        _write(folder, "child.yaml", ON_CONV4_BASE.format(base=base, layers=layers, batchnorm=batchnorm, rest=rest)), folder / "runs"
    )


def _saved_optimizer_variables(model_path):
    """How many optimizer variables a `.keras` file holds (the optimizer of the run's last phase)."""
    with zipfile.ZipFile(model_path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
        return len(weights["optimizer"]["vars"])


@pytest.mark.parametrize(
    "selector, frozen",
    [
        ("{last: 5}", {"block4_conv", "block4_bn", "block4_relu", "block4_pool", "flatten"}),
        ("{until: block2_bn}", {"block1_conv", "block1_bn", "block1_relu", "block1_pool", "block2_conv", "block2_bn"}),
        (
            '{match: "^block[13]_"}',
            {"block1_conv", "block1_bn", "block1_relu", "block1_pool", "block3_conv", "block3_bn", "block3_relu", "block3_pool"},
        ),
    ],
    ids=["last", "until", "match"],
)
def test_frozen_layers_have_no_optimizer_slots_and_keep_their_weights_bit_for_bit(conv4_base, tmp_path, selector, frozen):
    run_dir = _on_conv4_base(tmp_path, conv4_base, selector, "schedule: [{name: train, epochs: 2, learning_rate: 1.0e-2}]")
    model = _model(run_dir)
    base = {layer.name: layer for layer in _leaves(_model(conv4_base).get_layer(BACKBONE))}
    layers = [layer for layer in _leaves(model.get_layer(BACKBONE)) if layer.name != "preprocess_unit"]
    assert len(layers) == 17
    assert {layer.name for layer in layers if not layer.trainable} == frozen

    # The optimizer of the phase (saved with the model, restored by Keras) has a slot for
    # every variable it updated: none for a frozen layer's, one for every other weight's.
    assert len(model.optimizer.variables) == _saved_optimizer_variables(run_dir / runs.MODEL_FILE)
    slots = [variable.name for variable in model.optimizer.variables]

    def has_slot(weight):
        return any(name.startswith(weight.path.replace("/", "_") + "_") for name in slots)

    for layer in layers:
        before = [weight.numpy() for weight in base[layer.name].weights]
        after = [weight.numpy() for weight in layer.weights]
        if layer.name in frozen:
            assert not any(has_slot(weight) for weight in layer.weights), layer.name
            for got, want in zip(after, before, strict=True):
                np.testing.assert_array_equal(got, want, err_msg=layer.name)
        elif layer.weights:
            assert all(has_slot(weight) for weight in layer.trainable_weights) and layer.trainable_weights, layer.name
            assert any(not np.array_equal(got, want) for got, want in zip(after, before, strict=True)), f"{layer.name} did not train"


def _correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_scratch_baseline_trains_a_fresh_network_for_the_whole_schedule(conv4_base, tmp_path):
    rest = """\
baseline: scratch
schedule:
  - {name: head, epochs: 2, learning_rate: 1.0e-2}
  - {name: fine-tune, unfreeze: all, epochs: 1, learning_rate: 1.0e-3}
"""
    run_dir = _on_conv4_base(tmp_path, conv4_base, "all", rest, batchnorm="frozen")
    metrics = _metrics(run_dir)
    scratch = metrics["baseline"]["scratch"]
    assert scratch["name"] == "scratch" and scratch["epochs"] == 3
    assert set(scratch["test"]) == {"loss", "accuracy", "examples"} and scratch["test"]["examples"] == metrics["test"]["examples"]
    assert [row["phase_epoch"] for row in _history(run_dir, "scratch")] == ["1", "2", "3"]
    assert [row["phase"] for row in _history(run_dir)] == ["head", "head", "fine-tune", "scratch", "scratch", "scratch"]

    # The scratch network's kept weights, in the order of the transfer model's (it is a clone of it).
    (kept,) = (run_dir / runs.CHECKPOINTS_DIR).glob("*scratch*.npz")
    with np.load(kept) as saved:
        arrays = [saved[f"arr_{index}"] for index in range(len(saved.files))]
    transfer = _model(run_dir)
    assert [array.shape for array in arrays] == [tuple(weight.shape) for weight in transfer.weights]
    scratch_weights = {weight.path: array for weight, array in zip(transfer.weights, arrays, strict=True)}
    base = {weight.path: weight.numpy() for weight in _model(conv4_base).get_layer(BACKBONE).weights}
    tuned = {weight.path: weight.numpy() for weight in transfer.get_layer(BACKBONE).weights}
    for block in range(1, 5):
        kernel, bias, gamma = f"block{block}_conv/kernel", f"block{block}_conv/bias", f"block{block}_bn/gamma"
        # Transfer starts from the base's kernels; the baseline from fresh ones.
        assert _correlation(tuned[kernel], base[kernel]) > 0.9
        assert abs(_correlation(scratch_weights[kernel], base[kernel])) < 0.3, kernel
        # Every layer trained: biases and gammas start at exactly 0 and 1, and the base's are other values.
        assert np.any(scratch_weights[bias] != 0) and not np.allclose(scratch_weights[bias], base[bias]), bias
        assert np.any(scratch_weights[gamma] != 1) and not np.allclose(scratch_weights[gamma], base[gamma]), gamma
        moving_mean = scratch_weights[f"block{block}_bn/moving_mean"]
        assert np.any(moving_mean != 0) and not np.allclose(moving_mean, base[f"block{block}_bn/moving_mean"])


# --------------------------------------------------- best epoch, early stopping

# Three training images per class and a learning rate that overshoots: the
# validation loss falls to its best at epoch 7 of 10, then rises to 2.7 times that.
OVERFIT = """\
kind: transfer
name: overfit
seed: 1
data: {source: synthetic, name: glyphs, classes: 4, first_class: 20, samples: 12, image_size: [16, 16], channels: 1, validation: 0.75, batch_size: 4}
base: {source: builtin, name: conv4, weights: none}
freeze: {layers: none, batchnorm: frozen}
schedule: [{name: fit, epochs: 10, learning_rate: 3.0e-3, monitor: val_loss}]
"""


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("overfit")
    return _run(_write(folder, "overfit.yaml", OVERFIT), folder / "runs")


def test_a_phase_ends_with_the_weights_of_its_best_epoch_and_metrics_say_which(overfit_run, tmp_path):
    losses = [float(row["val_loss"]) for row in _history(overfit_run)]
    best = int(np.argmin(losses)) + 1
    assert len(losses) == 10 and best < 10 and losses[-1] > 1.5 * losses[best - 1], f"the recipe no longer overfits: {losses}"
    (phase,) = _metrics(overfit_run)["phases"]
    assert (phase["name"], phase["epochs"], phase["monitor"], phase["best_epoch"]) == ("fit", 10, "val_loss", best)
    assert phase["val_loss"] == pytest.approx(losses[best - 1], rel=1e-4)
    # The weights of that epoch: the same recipe stopped after it.
    stopped = _run(_write(tmp_path, "overfit.yaml", OVERFIT.replace("epochs: 10", f"epochs: {best}")), tmp_path / "runs")
    assert [row["val_loss"] for row in _history(stopped)] == [row["val_loss"] for row in _history(overfit_run)][:best]
    kept, expected = _model(overfit_run).get_weights(), _model(stopped).get_weights()
    for got, want in zip(kept, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_early_stopping_ends_a_phase_after_patience_epochs_without_improvement(tmp_path):
    patience = 2
    text = OVERFIT.replace("monitor: val_loss}", f"monitor: val_loss, early_stopping: {{monitor: val_loss, patience: {patience}}}}}")
    run_dir = _run(_write(tmp_path, "overfit.yaml", text), tmp_path / "runs")
    losses = [float(row["val_loss"]) for row in _history(run_dir)]
    # Where the phase must stop, counted here from its own history.
    best_loss, best_epoch, stop = math.inf, 0, None
    for epoch, loss in enumerate(losses, start=1):
        if loss < best_loss:
            best_loss, best_epoch = loss, epoch
        elif epoch - best_epoch == patience:
            stop = epoch
            break
    assert stop is not None and stop < 10, f"no {patience} epochs without improvement in {losses}"
    assert len(losses) == stop
    (phase,) = _metrics(run_dir)["phases"]
    assert phase["epochs"] == stop and phase["best_epoch"] == best_epoch
    assert phase["val_loss"] == pytest.approx(best_loss, rel=1e-4)
