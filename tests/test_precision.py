"""Recipe precision (Keras mixed policies held for one run) and MAML++ derivative-order annealing."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from workbench import runs
from workbench.data.sinusoid import SinusoidTasks
from workbench.errors import ArgumentError, RecipeError
from workbench.export.build import export_model
from workbench.export.source import for_export
from workbench.meta.learner import MetaLearner
from workbench.models.builtin import build_conv4, build_mlp
from workbench.precision import float32_copy, output_dtype, precision_policy
from workbench.recipe import load_recipe
from workbench.runner import run_recipe

TRANSFER = """\
kind: transfer
name: mixed-transfer
seed: 3
precision: {precision}
data: {{source: synthetic, name: glyphs, classes: 4, samples: 16, image_size: [16, 16], channels: 1,
       validation: 0.25, test: 0.25, batch_size: 8}}
base: {{source: builtin, name: conv4}}
freeze: {{layers: none, batchnorm: train}}
head: {{units: [8], dropout: 0.1}}
schedule:
  - {{epochs: 2, learning_rate: 3.0e-3}}
"""

META = """\
kind: meta
name: mixed-meta
seed: 5
precision: {precision}
tasks: {{source: synthetic, name: glyphs, classes: 24, samples: 8, ways: 3, shots: 1, queries: 2, image_size: [16, 16],
        validation: 0.25, test: 0.25}}
model: {{builtin: conv4}}
inner: {{steps: 1, learning_rate: 0.1{inner}}}
outer: {{meta_batch_size: 2, iterations: 4}}
evaluation: {{tasks: 8, steps: [1], every: 2, validation_tasks: 4}}
"""

# Run in a fresh interpreter (float32 default policy): reload each run's model.keras,
# redo its final measurement, and report dtypes.
RELOAD = """\
import json, sys
from pathlib import Path
import numpy as np
import workbench
from workbench import runs
from workbench.data.datasets import load_image_splits
from workbench.meta.runner import TEST_SEED, evaluate_learner, load_learner
from workbench.models.bases import load_model
from workbench.models.layers import all_layers


def compute_dtypes(model):
    return {layer.name: layer.compute_dtype for layer in all_layers(model) if layer.weights and not hasattr(layer, "layers")}

transfer, meta = (runs.Run.open(Path(p)) for p in sys.argv[1:3])
model = load_model(transfer.file(runs.MODEL_FILE))
model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
recipe = transfer.load_recipe()
data = load_image_splits(recipe.data, recipe.seed)
loss, accuracy = model.evaluate(data.test, verbose=0)
images = np.concatenate([x for x, _ in data.test.as_numpy_iterator()])
recipe, tasks, learner = load_learner(meta)
(evaluation,) = evaluate_learner(learner, tasks.samplers["test"], recipe.evaluation.tasks, recipe.evaluation.steps, TEST_SEED)
print(json.dumps({
    "transfer": {"loss": float(loss), "accuracy": float(accuracy), "output": str(model.predict(images, verbose=0).dtype),
                 "compute": compute_dtypes(model)},
    "meta": {"mean": evaluation["mean"], "output": str(learner.model(images[:2]).numpy().dtype),
             "compute": compute_dtypes(learner.model)},
}))
"""


def _run(tmp_path, text, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return run_recipe(load_recipe(path), path, tmp_path / "runs")


def _metrics(run_dir):
    return json.loads((run_dir / runs.METRICS_FILE).read_text())


def _figures(metrics):
    """A run's metrics less the time it took, which no two runs share."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("_seconds") and k != "seconds"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(metrics)


# ----------------------------------------------------------------- the policy


def test_the_policy_holds_inside_and_the_previous_one_comes_back_even_after_an_error():
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with precision_policy("mixed_bfloat16") as policy:
            assert policy.name == keras.config.dtype_policy().name == "mixed_bfloat16"
            model = build_mlp((1,), 1)
            raise RuntimeError("training failed")
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer("hidden_1").compute_dtype == "bfloat16" and model.get_layer("hidden_1").variable_dtype == "float32"
    assert model.get_layer("head").compute_dtype == "float32" and model.outputs[0].dtype == "float32"
    with pytest.raises(ArgumentError, match="precision"):
        with precision_policy("bfloat16"):
            pass


def test_the_last_layer_computes_in_the_variable_dtype_of_the_policy():
    assert output_dtype() == "float32" and output_dtype("float64") == "float64" and output_dtype("mixed_bfloat16") == "float32"
    conv = build_conv4((16, 16, 1), 3, filters=4, dtype="float64")
    assert conv.get_layer("head").compute_dtype == "float64"


def test_exports_get_a_float32_copy_of_a_mixed_model_with_the_same_weights():
    keras.utils.set_random_seed(0)
    with precision_policy("mixed_bfloat16"):
        mixed = build_conv4((16, 16, 1), 3, filters=4)
    plain = build_conv4((16, 16, 1), 3, filters=4)
    assert float32_copy(plain) is plain
    copy = float32_copy(mixed)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    for got, want in zip(copy.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    images = np.random.default_rng(0).random((4, 16, 16, 1)).astype("float32")
    outputs = copy.predict(images, verbose=0), mixed.predict(images, verbose=0)
    assert not np.array_equal(*outputs)  # the copy computes in float32 ...
    np.testing.assert_allclose(*outputs, atol=0.1)  # ... what the mixed model rounds to bfloat16
    compared, exported, _, _ = for_export(mixed)
    assert {layer.compute_dtype for model in (compared, exported) for layer in model.layers} == {"float32"}


# ----------------------------------------------------------------- whole runs


def test_mixed_bfloat16_runs_reload_in_a_fresh_process_and_predict_what_they_measured_in_float32(tmp_path):
    transfer = _run(tmp_path, TRANSFER.format(precision="mixed_bfloat16"), "transfer")
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks out of the run
    meta = _run(tmp_path, META.format(precision="mixed_bfloat16", inner=""), "meta")
    assert keras.config.dtype_policy().name == "float32"
    done = subprocess.run([sys.executable, "-c", RELOAD, str(transfer), str(meta)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])

    test = _metrics(transfer)["test"]
    # The mixed policy came back with the model; its last layer computes in float32.
    assert reloaded["transfer"]["compute"].pop("head_output") == "float32"
    assert set(reloaded["transfer"]["compute"].values()) == {"bfloat16"}, reloaded["transfer"]["compute"]
    assert reloaded["transfer"]["output"] == "float32"
    assert reloaded["transfer"]["loss"] == pytest.approx(test["loss"], rel=1e-5)
    assert reloaded["transfer"]["accuracy"] == test["accuracy"]
    assert reloaded["meta"]["compute"].pop("head") == "float32"
    assert set(reloaded["meta"]["compute"].values()) == {"bfloat16"}, reloaded["meta"]["compute"]
    assert reloaded["meta"]["output"] == "float32"
    assert reloaded["meta"]["mean"] == pytest.approx(_metrics(meta)["evaluation"][0]["mean"], rel=1e-5)


@pytest.mark.slow  # the float32 copy that exports take is tested above, on a model
def test_a_mixed_bfloat16_run_exports_to_onnx_matching_its_float32_copy(tmp_path):
    transfer = _run(tmp_path, TRANSFER.format(precision="mixed_bfloat16"), "transfer")
    # ONNX Runtime has no bfloat16 kernels for most ops: the export computes in float32 and matches that.
    record = export_model(transfer, "onnx", tmp_path / "transfer.onnx")
    assert record["parity"]["passed"] and record["input"]["dtype"] == "float32", record["parity"]


def test_a_float32_run_after_a_mixed_one_gives_the_figures_of_a_float32_run_alone(tmp_path):
    alone = _figures(_metrics(_run(tmp_path, META.format(precision="float32", inner=""), "alone")))
    mixed = _figures(_metrics(_run(tmp_path, META.format(precision="mixed_bfloat16", inner=""), "mixed")))
    assert keras.config.dtype_policy().name == "float32"
    after = _figures(_metrics(_run(tmp_path, META.format(precision="float32", inner=""), "after")))
    assert after == alone
    assert mixed != alone  # bfloat16 did compute: otherwise the comparison above proves nothing


def test_mixed_float16_meta_recipes_are_refused_at_their_line(tmp_path):
    path = tmp_path / "meta.yaml"
    path.write_text(META.format(precision="mixed_float16", inner=""))
    with pytest.raises(RecipeError, match=r"meta.yaml:4:\d+: precision: mixed_float16 needs loss scaling.*mixed_bfloat16"):
        load_recipe(path)
    path.write_text(META.format(precision="bfloat16", inner=""))
    with pytest.raises(RecipeError, match=r"meta.yaml:4:\d+: precision"):
        load_recipe(path)
    with precision_policy("mixed_float16"):
        model = build_mlp((1,), 1)
    with pytest.raises(ArgumentError, match="loss scaling.*hidden_1"):
        MetaLearner(model)


# ------------------------------------------------- derivative-order annealing


def _tiny_mlp():
    keras.utils.set_random_seed(0)
    return build_mlp((1,), 1, hidden_units=(8, 8), dtype="float64")


def test_derivative_order_annealing_takes_first_order_meta_gradients_until_the_iteration_given():
    episodes = SinusoidTasks(5, 5, seed=0).sample(3)
    options = dict(inner_steps=2, inner_learning_rate=0.05, loss="mse")
    first = MetaLearner(_tiny_mlp(), first_order=True, **options).meta_gradient(episodes)["gradients"]
    second = MetaLearner(_tiny_mlp(), **options).meta_gradient(episodes)["gradients"]
    annealed = MetaLearner(_tiny_mlp(), first_order_iterations=3, **options)
    for iteration, expected in ((0, first), (2, first), (3, second), (10, second)):
        annealed.optimizer.iterations.assign(iteration)
        for got, want in zip(annealed.meta_gradient(episodes)["gradients"], expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=f"iteration {iteration}")
    assert not all(np.allclose(a, b) for a, b in zip(first, second, strict=True))

    annealed.optimizer.iterations.assign(0)
    for expected_tracing in (1, 1, 1, 2, 2):  # the switch traces the second-order step once
        annealed.train_step(episodes)
        assert annealed.train_step_tracing_count == expected_tracing
    assert int(annealed.optimizer.iterations.numpy()) == 5


def test_derivative_order_annealing_is_refused_where_there_is_no_second_order(tmp_path):
    with pytest.raises(ArgumentError, match="first_order_iterations"):
        MetaLearner(_tiny_mlp(), algorithm="fomaml", first_order_iterations=2)
    path = tmp_path / "meta.yaml"
    for inner, message in (
        (", first_order: true, first_order_iterations: 5", "every iteration is first order"),
        (", first_order_iterations: -1", "first_order_iterations"),
    ):
        path.write_text(META.format(precision="float32", inner=inner))
        with pytest.raises(RecipeError, match=message):
            load_recipe(path)
    path.write_text(
        META.format(precision="float32", inner=", first_order_iterations: 5").replace("kind: meta", "kind: meta\nalgorithm: fomaml")
    )
    with pytest.raises(RecipeError, match=r"inner.first_order_iterations: .*algorithm fomaml has no second order"):
        load_recipe(path)


@pytest.mark.slow  # the learner's switch is tested above; this checks that the recipe option reaches it
def test_a_recipe_anneals_the_derivative_order_of_its_run(tmp_path):
    def losses(inner, name):
        history = (_run(tmp_path, META.format(precision="float32", inner=inner), name) / runs.HISTORY_FILE).read_text()
        return [row.split(",")[2] for row in history.splitlines()[1:]]  # the meta-loss of iterations 2 and 4

    annealed = losses(", first_order_iterations: 2", "annealed")
    first, second = losses(", first_order: true", "first"), losses("", "second")
    # Iteration 2 reports the loss after one update: first order in the annealed run, as in `first`.
    assert annealed[0] == first[0] != second[0]
    # Iteration 4 reports it after updates 1 and 2 (first order) and 3 (second order): no longer `first`'s.
    assert annealed[1] != first[1]
