"""The meta-learner LSTM (Ravi & Larochelle 2017): its update rule, meta-gradient, saving, and a recipe end to end."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from test_meta_learner import finite_difference_errors, sinusoid_episodes, tiny_mlp

from workbench import runs
from workbench.adaptation.any_way import AnyWayLearner
from workbench.cli import main
from workbench.data.episodes_types import Episodes
from workbench.data.sinusoid import SinusoidTasks
from workbench.meta import adapt, meta_lstm
from workbench.meta.learner import MetaLearner
from workbench.meta.runner import load_adaptation
from workbench.models.builtin import build_mlp
from workbench.recipe import load_recipe
from workbench.runner import run_recipe


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _preprocess(g, p=10.0):
    large = np.abs(g) >= np.exp(-p)
    return np.stack(
        [np.where(large, np.log(np.maximum(np.abs(g), np.exp(-p))) / p, -1.0), np.where(large, np.sign(g), np.exp(p) * g)], axis=-1
    )


def _paper_step(values, theta, grad, loss, carry):
    """The paper's equations in NumPy, coordinate by coordinate (Keras' LSTM gate order: i, f, c, o)."""
    kernel, recurrent, bias, wi, bi, wf, bf = values
    h, c, i_prev, f_prev = carry
    x = np.concatenate([_preprocess(grad), np.broadcast_to(_preprocess(np.array([loss]))[0], (theta.size, 2))], axis=1)
    z = x @ kernel + h @ recurrent + bias
    u = meta_lstm.UNITS
    c = _sigmoid(z[:, u : 2 * u]) * c + _sigmoid(z[:, :u]) * np.tanh(z[:, 2 * u : 3 * u])
    h = _sigmoid(z[:, 3 * u :]) * np.tanh(c)
    i = _sigmoid(np.concatenate([h, theta[:, None], i_prev], axis=1) @ wi + bi)
    f = _sigmoid(np.concatenate([h, theta[:, None], f_prev], axis=1) @ wf + bf)
    return f[:, 0] * theta - i[:, 0] * grad, (h, c, i, f)


def _random_rule(seed=0):
    rule = meta_lstm.MetaLSTMRule(0.1, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    rule.restore({key: rng.normal(scale=0.5, size=value.shape) for key, value in rule.as_dict().items()})
    return rule


def test_update_follows_the_papers_equations_over_two_steps():
    rule = _random_rule()
    values = [v.numpy() for v in rule.variables]
    rng = np.random.default_rng(1)
    shapes = [(3, 2), (2,)]
    params = [rng.normal(size=s) for s in shapes]
    theta = np.concatenate([p.reshape(-1) for p in params])
    zeros = np.zeros((theta.size, meta_lstm.UNITS))
    carry, expected_carry = None, (zeros, zeros, np.zeros((theta.size, 1)), np.zeros((theta.size, 1)))
    for loss in (1.3, 0.02):
        # Gradients large, tiny (below e^-10, seen linearly) and zero, so that both preprocessing branches are used.
        grad = rng.normal(size=theta.size) * np.array([1, 1e-6, 0, 3, 1e-2, 1, 0.5, 2])
        grads = [tf.constant(grad[:6].reshape(3, 2)), tf.constant(grad[6:])]
        params, carry = meta_lstm.update([tf.constant(v) for v in values], params, grads, tf.constant(loss, tf.float64), carry)
        theta, expected_carry = _paper_step(values, theta, grad, loss, expected_carry)
        assert [tuple(p.shape) for p in params] == shapes
        np.testing.assert_allclose(np.concatenate([p.numpy().reshape(-1) for p in params]), theta, rtol=1e-10, atol=1e-12)
        for got, want in zip(carry, expected_carry, strict=True):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


def test_each_coordinate_has_its_own_state_and_shares_the_weights():
    """Permuting the coordinates permutes the updates and states: nothing but the weights is shared."""
    values = [tf.constant(v.numpy()) for v in _random_rule(2).variables]
    rng = np.random.default_rng(3)
    theta, grads = rng.normal(size=12), [rng.normal(size=12), rng.normal(size=12)]
    order = rng.permutation(12)
    carry = permuted_carry = None
    for grad in grads:
        (theta_new,), carry = meta_lstm.update(values, [tf.constant(theta)], [tf.constant(grad)], tf.constant(0.7, tf.float64), carry)
        (permuted,), permuted_carry = meta_lstm.update(
            values, [tf.constant(theta[order])], [tf.constant(grad[order])], tf.constant(0.7, tf.float64), permuted_carry
        )
        np.testing.assert_allclose(permuted.numpy(), theta_new.numpy()[order], rtol=1e-12)
        for a, b in zip(permuted_carry, carry, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy()[order], rtol=1e-12)
        theta = theta_new.numpy()
    assert len(np.unique(np.round(carry[2].numpy(), 12))) == 12  # a learning rate per coordinate


def test_with_open_forget_gates_and_a_constant_input_gate_it_is_sgd():
    """The meta-learner LSTM generalises gradient descent: with f = 1 and i = alpha it takes SGD's steps."""
    rule = meta_lstm.MetaLSTMRule(0.05, dtype="float64")
    values = rule.as_dict()
    for gate in ("input_gate", "forget_gate"):
        values[f"meta_lstm/{gate}/kernel"] = np.zeros_like(values[f"meta_lstm/{gate}/kernel"])
    values["meta_lstm/forget_gate/bias"] = np.array([40.0])  # sigmoid(40) is 1 in float64
    rule.restore(values)
    assert _sigmoid(rule.as_dict()["meta_lstm/input_gate/bias"][0]) == pytest.approx(0.05, rel=1e-12)
    model = tiny_mlp()
    episodes = sinusoid_episodes(tasks=1)
    x, y = tf.constant(episodes.support_x[0]), tf.constant(episodes.support_y[0])
    weights = [tf.constant(v.numpy()) for v in model.trainable_variables]
    common = dict(loss="mse", steps=3, adapted=tuple(range(len(weights))), first_order=True)
    lstm, _ = adapt.inner_loop(
        model, weights, [], x, y, rate_kind="meta_lstm", rates=[tf.constant(v.numpy()) for v in rule.variables], **common
    )
    sgd, _ = adapt.inner_loop(model, weights, [], x, y, rate_kind="fixed", rates=0.05, **common)
    for a, b in zip(lstm, sgd, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-15)


def test_second_order_meta_gradient_matches_finite_differences():
    learner = MetaLearner(tiny_mlp(), algorithm="meta_lstm", inner_steps=2, inner_learning_rate=0.05, first_order=False, loss="mse")
    assert len(learner.meta_variables) == len(learner.model.trainable_variables) + len(meta_lstm.KEYS)
    errors = finite_difference_errors(learner, sinusoid_episodes())
    assert max(errors) < 1e-5, errors


def test_the_paper_drops_second_derivatives_by_default_and_refuses_maml_plus_plus_options():
    episodes = sinusoid_episodes()
    default = MetaLearner(tiny_mlp(), algorithm="meta_lstm", inner_steps=2, inner_learning_rate=0.05)
    assert default.first_order
    second = MetaLearner(tiny_mlp(), algorithm="meta_lstm", inner_steps=2, inner_learning_rate=0.05, first_order=False)
    first_gradients, second_gradients = (learner.meta_gradient(episodes)["gradients"] for learner in (default, second))
    assert max(np.abs(a - b).max() for a, b in zip(first_gradients, second_gradients, strict=True)) > 1e-6
    for options, message in (
        (dict(multi_step_loss=True), "does not apply to meta_lstm"),
        (dict(inner_steps=0), "The meta-learner LSTM needs at least one inner step"),
        (dict(inner_learning_rate=1.5), "strictly between 0 and 1"),
        (dict(first_order_iterations=10), "first_order_iterations"),
    ):
        with pytest.raises(ValueError, match=message):
            MetaLearner(tiny_mlp(), algorithm="meta_lstm", **{"inner_learning_rate": 0.05, **options})


def test_a_saved_meta_learner_reloads_and_adapts_the_same(tmp_path):
    tasks = SinusoidTasks(5, 5, seed=0)
    keras.utils.set_random_seed(0)
    learner = MetaLearner(build_mlp((1,), 1, hidden_units=(8, 8)), algorithm="meta_lstm", inner_steps=2, inner_learning_rate=0.01)
    start = learner.inner_rates()
    for _ in range(3):
        learner.train_step(tasks.sample(4))
    trained = learner.inner_rates()
    assert set(trained) == set(meta_lstm.KEYS)
    assert all(not np.array_equal(trained[key], start[key]) for key in meta_lstm.KEYS)  # the outer loop trains every part
    learner.save_inner_rates(tmp_path / "rates.npz")
    fresh = MetaLearner(learner.export_model(), algorithm="meta_lstm", inner_steps=2, inner_learning_rate=0.01)
    fresh.load_inner_rates(tmp_path / "rates.npz")
    episode = tasks.sample(1, seed=5)
    for a, b in zip(
        fresh.adapted_weights(episode.support_x[0], episode.support_y[0], steps=4),
        learner.adapted_weights(episode.support_x[0], episode.support_y[0], steps=4),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="meta-learner LSTM weights"):
        fresh.set_inner_rates({"block1_conv/kernel": np.zeros(1)})


GLYPHS = """\
kind: meta
algorithm: meta_lstm
seed: 5
tasks: {source: synthetic, name: glyphs, classes: 24, samples: 8, ways: 3, shots: 1, queries: 2, image_size: [16, 16], validation: 0.25, test: 0.25}
model: {builtin: conv4, filters: 8}
inner: {steps: 2, learning_rate: 0.1}
outer: {meta_batch_size: 2, iterations: 4}
evaluation: {tasks: 8, steps: [0, 2, 4], every: 2, validation_tasks: 4}
"""


def test_a_meta_lstm_recipe_runs_reloads_and_adapts(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(GLYPHS)
    run_dir = run_recipe(load_recipe(path), path, tmp_path / "runs")
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    assert [entry["steps"] for entry in metrics["evaluation"]] == [0, 2, 4]
    settings = json.loads((run_dir / runs.ADAPTATION_FILE).read_text())
    assert settings["algorithm"] == "meta_lstm" and settings["learned_rates"] == runs.INNER_RATES_FILE
    model = keras.saving.load_model(run_dir / runs.MODEL_FILE, safe_mode=True)
    assert model.get_layer("block1_conv").kernel.shape[-1] == 8

    result = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    again = json.loads((run_dir / "evaluation.json").read_text())["evaluation"]
    for before, after in zip(metrics["evaluation"], again, strict=True):
        assert after["mean"] == pytest.approx(before["mean"], abs=1e-6)
    # Adapting to tasks of another number of ways: the same LSTM, coordinate by coordinate, on a 5-unit head.
    _, _, learner = load_adaptation(runs.Run(run_dir))
    five_way = AnyWayLearner(learner, 5)
    assert five_way.rates[0].shape == (4, 4 * meta_lstm.UNITS)
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(5), (3, 1)).astype("int32")
    episodes = Episodes(rng.random((3, 5, 16, 16, 1)), labels, rng.random((3, 5, 16, 16, 1)), labels)
    scores = five_way.evaluate(episodes, (0, 2))
    assert all(value.shape == (3,) for value in scores.values())
    adapted = five_way.adapt(episodes.support_x[0], episodes.support_y[0], steps=2)
    assert adapted.output_shape == (None, 5)


@pytest.mark.parametrize(
    "change, where, message",
    [
        (("{builtin: conv4, filters: 8}", "{builtin: mlp, filters: 8}"), "recipe.yaml:5:", "the mlp has none"),
        (("learning_rate: 0.1", "learning_rate: 1.5"), "recipe.yaml:6:", "inner.learning_rate: meta_lstm starts its input gate"),
        (("learning_rate: 0.1}", "learning_rate: 0.1, learn_rates: true}"), "recipe.yaml:6:", "inner.learn_rates: is a MAML++ option"),
    ],
    ids=["filters-on-mlp", "rate-above-one", "maml++"],
)
def test_validate_refuses_what_the_meta_lstm_cannot_do(tmp_path, change, where, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(GLYPHS.replace(*change))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and where in result.output and message in result.output, result.output
