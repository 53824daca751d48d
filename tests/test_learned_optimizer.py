"""Learned optimizers (Andrychowicz et al. 2016): preprocessing, meta-gradients, per-coordinate state, saving, use in a transfer phase.

Tiny real problems only: 2-d quadratics in float64 for the meta-gradient checks,
a few glyph images for the MLP and the transfer run.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main
from workbench.learned.evaluation import BASELINES, baseline_slots, baseline_update
from workbench.learned.keras_optimizer import LearnedOptimizer, load_optimizer_net
from workbench.learned.optimizees import ImageMLPs, Quadratics, glyph_images
from workbench.learned.optimizer_net import build_optimizer_net, initial_state, propose_updates
from workbench.learned.preprocessing import preprocess_gradients
from workbench.learned.training import MetaTrainer, meta_gradient, unroll
from workbench.recipe import load_recipe


def _paper_preprocessing(g, p):
    """The paper's formula, written out per number."""
    if abs(g) >= math.exp(-p):
        return (math.log(abs(g)) / p, math.copysign(1.0, g) if g else 0.0)
    return (-1.0, math.exp(p) * g)


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_preprocessing_matches_the_papers_formula_on_both_sides_of_the_threshold(p):
    threshold = math.exp(-p)
    gradients = [3.0, -0.25, 1e-3, -threshold, threshold, threshold * 0.999, -threshold * 0.5, 1e-9, 0.0]
    got = preprocess_gradients(tf.constant(gradients, tf.float64)[:, None], p).numpy()
    expected = np.array([_paper_preprocessing(g, p) for g in gradients])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    # At the threshold itself the log branch holds: log(e^-p) / p = -1, and the sign.
    np.testing.assert_allclose(got[4], [-1.0, 1.0], rtol=1e-12)
    # Just below it, the linear branch: (-1, e^p g), continuous in its first input.
    np.testing.assert_allclose(got[5], [-1.0, 0.999], rtol=1e-9)


def _float64_problem(seed=3):
    family = Quadratics(dimensions=2, dtype="float64")
    problems = family.sample(3, seed=seed)
    net = build_optimizer_net(layers=2, units=6, dtype="float64", seed=seed)
    # Large enough steps that the unroll moves the optimizees (an untrained net's updates are tiny).
    net.get_layer("output_scale").scale = 0.5
    return family, problems, net


def _directional_derivative(objective, net, direction, epsilon=1e-6):
    weights = [variable.numpy() for variable in net.trainable_variables]

    def at(sign):
        for variable, value, step in zip(net.trainable_variables, weights, direction, strict=True):
            variable.assign(value + sign * epsilon * step)
        return float(objective())

    try:
        return (at(1) - at(-1)) / (2 * epsilon)
    finally:
        for variable, value in zip(net.trainable_variables, weights, strict=True):
            variable.assign(value)


def _replayed_objective(net, family, problems, gradients, steps):
    """The unroll's objective with the optimizee's gradients held at the values they had: what dropping second derivatives differentiates."""
    parameters, state, total = problems.start, initial_state(net, 6, tf.float64), 0.0
    for offset in range(steps):
        if offset:
            total += tf.reduce_mean(family.loss(problems.data, parameters, offset))
        updates, state = propose_updates(net, gradients[offset], state)
        parameters = parameters + updates
    return total + tf.reduce_mean(family.loss(problems.data, parameters, steps))


def _recorded_gradients(family, problems, net, steps):
    parameters, state, gradients = problems.start, initial_state(net, 6, tf.float64), []
    for offset in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(parameters)
            total = tf.reduce_sum(family.loss(problems.data, parameters, offset))
        gradients.append(tape.gradient(total, parameters))
        updates, state = propose_updates(net, gradients[-1], state)
        parameters = parameters + updates
    return gradients


@pytest.mark.parametrize("second_derivatives", [False, True])
def test_unrolled_meta_gradient_equals_finite_differences_on_a_2d_quadratic(second_derivatives):
    family, problems, net = _float64_problem()
    steps = 5
    start_state = initial_state(net, 6, tf.float64)
    gradients, meta_loss, _, _ = meta_gradient(net, family, problems.data, problems.start, start_state, 0, steps, second_derivatives)
    if second_derivatives:  # the true objective of the unroll
        objective = lambda: unroll(net, family, problems.data, problems.start, start_state, 0, steps, True)[0]  # noqa: E731
    else:  # the paper's: the optimizee's gradients are inputs, held fixed
        recorded = _recorded_gradients(family, problems, net, steps)
        objective = lambda: _replayed_objective(net, family, problems, recorded, steps)  # noqa: E731
        assert float(objective()) == pytest.approx(float(meta_loss), rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(3):
        direction = [rng.standard_normal(variable.shape) for variable in net.trainable_variables]
        analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(gradients, direction, strict=True))
        numeric = _directional_derivative(objective, net, direction)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_dropping_second_derivatives_changes_the_meta_gradient():
    family, problems, net = _float64_problem()
    state = initial_state(net, 6, tf.float64)
    first = meta_gradient(net, family, problems.data, problems.start, state, 0, 5, False)[0]
    second = meta_gradient(net, family, problems.data, problems.start, state, 0, 5, True)[0]
    difference = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(first, second, strict=True))
    assert difference > 1e-6


def _run_updates(net, gradient_rows):
    """Feed `[steps, coordinates]` gradients through the net; the updates of each step and the final states."""
    state = initial_state(net, gradient_rows.shape[1])
    updates = []
    for row in gradient_rows:
        update, state = propose_updates(net, tf.constant(row, tf.float32), state)
        updates.append(update.numpy())
    return np.array(updates), [s.numpy() for s in state]


def test_state_is_per_coordinate_and_weights_are_shared():
    net = build_optimizer_net(seed=1)
    # Coordinates 0 and 2 share a history; coordinate 1 reaches the same last gradient by another path.
    history = np.array([[1.0, -2.0, 1.0], [0.3, 1e-6, 0.3], [0.05, 0.05, 0.05]], np.float32)
    updates, state = _run_updates(net, history)
    # Equal up to float32 rounding (the CPU kernels may round each row of a batch differently).
    for layer_state in state:
        np.testing.assert_allclose(layer_state[0], layer_state[2], rtol=1e-6, atol=1e-7)
        assert np.max(np.abs(layer_state[0] - layer_state[1])) > 1e-3
    assert updates[-1, 0] == pytest.approx(updates[-1, 2], rel=1e-5) and abs(updates[-1, 0] - updates[-1, 1]) > 1e-4


def test_permuting_coordinates_permutes_updates():
    net = build_optimizer_net(seed=2)
    history = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32) * np.float32(10.0) ** np.arange(-3, 4)
    order = np.array([3, 0, 6, 1, 5, 2, 4])
    updates, _ = _run_updates(net, history)
    permuted, _ = _run_updates(net, history[:, order])
    np.testing.assert_allclose(permuted, updates[:, order], rtol=1e-6, atol=1e-9)


RELOAD = """
import sys
import keras
import numpy as np
import workbench.learned  # registers the preprocessing layer: nothing else comes from code
from workbench.learned.optimizer_net import initial_state, propose_updates
import tensorflow as tf

net = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)
history = np.load(sys.argv[2])
state = initial_state(net, history.shape[1])
updates = []
for row in history:
    update, state = propose_updates(net, tf.constant(row), state)
    updates.append(update.numpy())
np.save(sys.argv[3], np.array(updates))
"""


def test_saved_learned_optimizer_reloads_in_a_fresh_process_and_makes_the_same_updates(tmp_path):
    net = build_optimizer_net(seed=4)
    path = tmp_path / "optimizer.keras"
    runs.save_model(net, path)
    history = np.random.default_rng(1).standard_normal((5, 9)).astype(np.float32) * np.float32(0.01)
    np.save(tmp_path / "history.npy", history)
    expected, _ = _run_updates(net, history)
    subprocess.run(
        [sys.executable, "-c", RELOAD, str(path), str(tmp_path / "history.npy"), str(tmp_path / "updates.npy")], check=True, timeout=120
    )
    np.testing.assert_array_equal(np.load(tmp_path / "updates.npy"), expected)


def test_keras_optimizer_applies_the_saved_network_with_a_state_per_element(tmp_path):
    net = build_optimizer_net(seed=5)
    runs.save_model(net, tmp_path / runs.MODEL_FILE)
    optimizer = LearnedOptimizer(str(tmp_path))
    variable = keras.Variable(np.zeros((2, 3), np.float32))
    history = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    for row in history:
        optimizer.apply([tf.constant(row.reshape(2, 3))], [variable])
    expected, _ = _run_updates(net, history)
    np.testing.assert_allclose(variable.numpy().reshape(-1), expected.sum(axis=0), rtol=1e-5, atol=1e-7)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, LearnedOptimizer) and restored.path == optimizer.path


def test_loading_a_model_that_is_no_learned_optimizer_says_so(tmp_path):
    inputs = keras.Input((3,), name="image")
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "other.keras")
    with pytest.raises(Exception, match="is not a learned optimizer"):
        load_optimizer_net(tmp_path / "other.keras")
    with pytest.raises(Exception, match="does not exist"):
        load_optimizer_net(tmp_path / "nowhere")


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_make_the_same_steps_as_kerass_optimizers(name):
    rate = 0.05
    keras_optimizer = {
        "sgd": keras.optimizers.SGD(rate),
        "nesterov": keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
        "rmsprop": keras.optimizers.RMSprop(rate),
        "adam": keras.optimizers.Adam(rate),
    }[name]
    start = np.array([[0.5, -1.0, 2.0]], np.float32)
    variable = keras.Variable(start)
    parameters = tf.constant(start)
    slots = baseline_slots(name, parameters)
    for step, gradient in enumerate(np.random.default_rng(3).standard_normal((4, 1, 3)).astype(np.float32), start=1):
        keras_optimizer.apply([tf.constant(gradient)], [variable])
        update, slots = baseline_update(name, tf.constant(gradient), slots, step, rate)
        parameters = parameters + update
    np.testing.assert_allclose(parameters.numpy(), variable.numpy(), rtol=1e-5, atol=1e-6)


def test_meta_training_lowers_the_loss_of_mlp_optimizees():
    images, labels = glyph_images(4, 10, (8, 8), seed=0)
    family = ImageMLPs(images, labels, 4, hidden=(6,), batch_size=16)
    net = build_optimizer_net(seed=0)
    trainer = MetaTrainer(net, family, keras.optimizers.Adam(3e-2), steps=10, unroll=5, optimizees=4)
    record = trainer.train(15, seed=0, log_every=1000)
    # An untrained network barely moves the MLPs from log(4) = 1.386; a trained one learns to step.
    assert min(record.final_loss[:3]) > 1.37 and np.mean(record.final_loss[-3:]) < 1.0


# ------------------------------------------------- recipes and runs

QUADRATIC_RECIPE = """\
kind: meta
algorithm: learned_optimizer
seed: 3
tasks: {source: quadratic, dimensions: 3, optimizees: 16}
optimizer_net: {layers: 2, units: 8}
inner: {steps: 10, unroll: 5}
outer: {learning_rate: 3.0e-3, iterations: 40}
evaluation: {tasks: 8, steps: [10, 20], baselines: [sgd, adam], tuning_tasks: 4}
"""

TRANSFER_RECIPE = """\
kind: transfer
seed: 1
data: {source: synthetic, name: glyphs, classes: 3, samples: 10, image_size: [16, 16], channels: 1, validation: 0.0, batch_size: 5}
base: {source: builtin, name: conv4, weights: none}
freeze: {layers: all}
schedule:
  - {name: learned, epochs: 5, optimizer: {learned: RUN}, monitor: loss}
"""


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learned")
    (folder / "quadratic.yaml").write_text(QUADRATIC_RECIPE)
    result = CliRunner().invoke(main, ["run", str(folder / "quadratic.yaml"), "--runs-dir", str(folder / "runs")])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1]), result.output


def test_learned_optimizer_run_writes_its_metrics_and_a_reloadable_model(learned_run):
    run, output = learned_run
    metrics = json.loads((run / runs.METRICS_FILE).read_text())
    assert metrics["metric"] == "loss"
    assert [entry["steps"] for entry in metrics["evaluation"]] == [10, 20]
    assert set(metrics["baselines"]) == {"sgd", "adam"}
    for baseline in metrics["baselines"].values():
        assert baseline["learning_rate"] > 0 and [entry["tasks"] for entry in baseline["evaluation"]] == [8, 8]
    assert len(metrics["curves"]["learned"]) == 21 and metrics["training"]["iterations"] == 40
    assert "loss after 20 steps (8 held-out optimizees): learned" in output and "adam (lr " in output
    net = load_optimizer_net(run)
    assert net.get_layer("lstm_1").units == 8


def test_transfer_phase_trains_with_a_learned_optimizer(learned_run, tmp_path):
    run, _ = learned_run
    (tmp_path / "lo").symlink_to(run, target_is_directory=True)
    recipe_path = tmp_path / "transfer.yaml"
    recipe_path.write_text(TRANSFER_RECIPE.replace("RUN", "lo"))
    assert load_recipe(recipe_path).schedule[0].optimizer.learned == str(run.resolve())
    result = CliRunner().invoke(main, ["run", str(recipe_path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    rows = (Path(result.stdout.strip().splitlines()[-1]) / runs.HISTORY_FILE).read_text().splitlines()
    header, *epochs = [row.split(",") for row in rows]
    losses = [float(row[header.index("loss")]) for row in epochs]
    assert len(losses) == 5 and losses[-1] < losses[0]


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "RUN"],
        ["predict", "RUN", "x.png"],
        ["adapt", "RUN", "--support", ".", "-o", "a.keras"],
        ["export", "RUN", "--format", "saved_model", "--output", "x"],
    ],
)
def test_commands_for_classifiers_refuse_a_learned_optimizer_in_one_line(learned_run, command):
    run, _ = learned_run
    result = CliRunner().invoke(main, [str(run) if part == "RUN" else part for part in command])
    assert result.exit_code == 2, result.output
    assert f"a learned optimizer, which {command[0]} cannot take" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "phase, message",
    [
        ("{name: x, epochs: 1, optimizer: {learned: missing}}", "schedule.0.optimizer.learned: run directory"),
        ("{name: x, epochs: 1, optimizer: adamax}", "schedule.0.optimizer: unknown optimizer 'adamax'; did you mean adam"),
        ("{name: x, epochs: 1, optimizer: 3}", "schedule.0.optimizer: expected adam | adamw | sgd | rmsprop, or {learned: RUN}"),
        ("{name: x, epochs: 1, optimizer: {learned: lo}, learning_rate: 0.1}", "schedule.0.learning_rate: a learned optimizer takes"),
    ],
)
def test_phase_optimizer_errors_name_the_field(tmp_path, phase, message):
    (tmp_path / "lo").mkdir()
    text = TRANSFER_RECIPE.split("schedule:")[0] + f"schedule:\n  - {phase}\n"
    (tmp_path / "t.yaml").write_text(text)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "t.yaml")])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize(
    "change, message",
    [
        ("inner: {steps: 10, unroll: 3}", "inner: inner.steps must be a whole number of unrolls"),
        ("tasks: {source: quadratik}", "tasks.source: unknown source 'quadratik'; did you mean quadratic?"),
        ("evaluation: {baselines: [sgd, sgd]}", "evaluation.baselines: each baseline once"),
        ("precision: mixed_bfloat16", "precision: a learned optimizer trains in float32"),
    ],
)
def test_learned_optimizer_recipe_errors_name_the_field(tmp_path, change, message):
    key = change.split(":")[0]
    lines = [line for line in QUADRATIC_RECIPE.splitlines() if not line.startswith(key + ":")]
    (tmp_path / "r.yaml").write_text("\n".join(lines) + f"\n{change}\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_misspelt_algorithm_lists_learned_optimizer_among_the_choices(tmp_path):
    (tmp_path / "r.yaml").write_text(QUADRATIC_RECIPE.replace("learned_optimizer", "learned_optimiser"))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2
    assert "r.yaml:2:12: algorithm: unknown algorithm 'learned_optimiser'; did you mean learned_optimizer" in result.output


def test_example_recipes_validate():
    root = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("learned_optimizer_quadratic.yaml", "learned_optimizer_mlp.yaml"):
        recipe = load_recipe(root / name)
        assert recipe.algorithm == "learned_optimizer" and recipe.inner.steps % recipe.inner.unroll == 0
    result = CliRunner().invoke(main, ["validate", "--plan", str(root / "learned_optimizer_mlp.yaml")])
    assert result.exit_code == 0, result.output
    assert "optimizees: MLP 256-20-10 (sigmoid) on glyphs, batch 128" in result.output
    assert "2 coordinatewise LSTM layers of 20 units, preprocessing p = 10" in result.output


def test_defaults_are_the_papers(tmp_path):
    (tmp_path / "d.yaml").write_text("kind: meta\nalgorithm: learned_optimizer\ntasks: {source: quadratic}\n")
    recipe = load_recipe(tmp_path / "d.yaml")
    assert (recipe.optimizer_net.layers, recipe.optimizer_net.units, recipe.optimizer_net.preprocessing_p) == (2, 20, 10.0)
    assert (recipe.inner.steps, recipe.inner.unroll, recipe.outer.optimizer, recipe.tasks.dimensions) == (100, 20, "adam", 10)
