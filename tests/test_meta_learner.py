import keras
import numpy as np
import pytest

from workbench.data.episodes_types import Episodes
from workbench.data.sinusoid import SinusoidTasks
from workbench.meta.adapt import multi_step_weights
from workbench.meta.batchnorm import ExactBatchNormalization
from workbench.meta.learner import MetaLearner, summarize
from workbench.models.builtin import build_conv4, build_mlp


def tiny_mlp(seed=0, dtype="float64"):
    keras.utils.set_random_seed(seed)
    return build_mlp((1,), 1, hidden_units=(8, 8), dtype=dtype)


def tiny_conv(seed=0, dtype="float64"):
    keras.utils.set_random_seed(seed)
    return build_conv4((6, 6, 1), classes=3, filters=3, blocks=1, dtype=dtype)


def sinusoid_episodes(tasks=3, shots=5, queries=5, seed=0):
    return SinusoidTasks(shots, queries, seed=seed).sample(tasks)


def image_episodes(tasks=2, ways=3, shots=2, queries=2, seed=0):
    rng = np.random.default_rng(seed)
    labels = lambda n: np.tile(np.repeat(np.arange(ways), n), (tasks, 1)).astype("int32")  # noqa: E731
    return Episodes(
        support_x=rng.normal(size=(tasks, ways * shots, 6, 6, 1)),
        support_y=labels(shots),
        query_x=rng.normal(size=(tasks, ways * queries, 6, 6, 1)),
        query_y=labels(queries),
    )


def finite_difference_errors(learner, episodes, directions=3, eps=1e-6):
    """Relative errors of the meta-gradient along random directions, against central differences."""
    gradients = learner.meta_gradient(episodes)["gradients"]
    variables = learner.meta_variables
    initial = [v.numpy() for v in variables]
    rng = np.random.default_rng(1)
    errors = []
    for _ in range(directions):
        direction = [rng.normal(size=value.shape) for value in initial]
        losses = []
        for sign in (1.0, -1.0):
            for variable, value, d in zip(variables, initial, direction, strict=True):
                variable.assign(value + sign * eps * d)
            losses.append(learner.meta_gradient(episodes)["loss"])
        for variable, value in zip(variables, initial, strict=True):
            variable.assign(value)
        numeric = (losses[0] - losses[1]) / (2 * eps)
        analytic = sum(float(np.sum(g * d)) for g, d in zip(gradients, direction, strict=True))
        errors.append(abs(numeric - analytic) / max(abs(numeric), 1e-8))
    return errors


# --------------------------------------------------------- meta-gradients


@pytest.mark.parametrize(
    "options",
    [
        dict(algorithm="maml", inner_steps=2, strategy="vectorized"),
        dict(algorithm="maml", inner_steps=2, strategy="loop"),
        dict(algorithm="anil", inner_steps=2),
        dict(algorithm="metasgd", inner_steps=2),
        dict(algorithm="maml", inner_steps=3, multi_step_loss=True, learn_inner_rates=True, multi_step_anneal=10),
    ],
    ids=["maml-vectorized", "maml-loop", "anil", "metasgd", "maml++"],
)
def test_second_order_meta_gradient_matches_finite_differences_mlp(options):
    learner = MetaLearner(tiny_mlp(), inner_learning_rate=0.05, loss="mse", **options)
    if options.get("multi_step_loss"):
        learner.optimizer.iterations.assign(4)  # weights between uniform and last-step-only
    errors = finite_difference_errors(learner, sinusoid_episodes())
    assert max(errors) < 1e-6, errors


def test_second_order_meta_gradient_matches_finite_differences_conv_batchnorm():
    learner = MetaLearner(tiny_conv(), inner_steps=2, inner_learning_rate=0.5, loss="sparse_categorical_crossentropy")
    assert learner.strategy == "loop"
    assert any(isinstance(layer, ExactBatchNormalization) for layer in learner.model.layers)
    errors = finite_difference_errors(learner, image_episodes())
    assert max(errors) < 1e-6, errors


def test_stock_batchnorm_gets_second_order_wrong():
    """Why `exact_batchnorm` exists: the same check fails with Keras' layer."""
    learner = MetaLearner(
        tiny_conv(),
        inner_steps=2,
        inner_learning_rate=0.5,
        loss="sparse_categorical_crossentropy",
        exact_batchnorm=False,
    )
    errors = finite_difference_errors(learner, image_episodes())
    assert max(errors) > 1e-3, errors


def test_vectorized_and_loop_strategies_agree():
    episodes = sinusoid_episodes(tasks=4)
    results = [
        MetaLearner(tiny_mlp(), inner_steps=2, inner_learning_rate=0.05, strategy=s).meta_gradient(episodes) for s in ("vectorized", "loop")
    ]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-12)
    for a, b in zip(results[0]["gradients"], results[1]["gradients"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_first_and_second_order_differ_except_without_inner_steps():
    episodes = sinusoid_episodes()

    def gradients(first_order, steps):
        learner = MetaLearner(tiny_mlp(), inner_steps=steps, inner_learning_rate=0.05, first_order=first_order)
        return learner.meta_gradient(episodes)["gradients"]

    second, first = gradients(False, 2), gradients(True, 2)
    difference = max(np.abs(a - b).max() for a, b in zip(second, first, strict=True))
    scale = max(np.abs(a).max() for a in second)
    assert difference > 1e-3 * scale
    for a, b in zip(gradients(False, 0), gradients(True, 0), strict=True):
        np.testing.assert_array_equal(a, b)
    fomaml = MetaLearner(tiny_mlp(), algorithm="fomaml", inner_steps=2, inner_learning_rate=0.05)
    for a, b in zip(fomaml.meta_gradient(episodes)["gradients"], first, strict=True):
        np.testing.assert_array_equal(a, b)


def test_second_order_on_linear_regression_matches_the_closed_form():
    """For y = w*x + b and mse, one step: g_maml = (I - alpha * H_support) g_fomaml."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1,), dtype="float64")
    model = keras.Model(inputs, keras.layers.Dense(1, name="head", dtype="float64")(inputs))
    episodes = sinusoid_episodes(tasks=1, shots=4, queries=6, seed=2)
    alpha = 0.1
    second = MetaLearner(model, inner_learning_rate=alpha).meta_gradient(episodes)["gradients"]
    first = MetaLearner(model, inner_learning_rate=alpha, first_order=True).meta_gradient(episodes)["gradients"]
    features = np.concatenate([episodes.support_x[0], np.ones((4, 1))], axis=1).astype(np.float64)
    hessian = 2.0 * features.T @ features / len(features)
    first_vector = np.array([first[0].item(), first[1].item()])
    expected = (np.eye(2) - alpha * hessian) @ first_vector
    np.testing.assert_allclose([second[0].item(), second[1].item()], expected, rtol=1e-10)
    assert not np.allclose(first_vector, expected)


def test_anil_inner_loop_adapts_only_the_head():
    learner = MetaLearner(tiny_mlp(), algorithm="anil", inner_steps=3, inner_learning_rate=0.1)
    episodes = sinusoid_episodes(tasks=1)
    fast = learner.adapted_weights(episodes.support_x[0], episodes.support_y[0])
    for variable, value in zip(learner.model.trainable_variables, fast, strict=True):
        if variable.path.startswith("head/"):
            assert not np.array_equal(variable.numpy(), value)
        else:
            np.testing.assert_array_equal(variable.numpy(), value)
    # The base is still meta-learned by the outer loop.
    gradients = learner.meta_gradient(sinusoid_episodes())["gradients"]
    assert all(np.abs(g).max() > 0 for g in gradients)
    with pytest.raises(ValueError, match="head_layers"):
        MetaLearner(tiny_mlp(), algorithm="anil", head_layers=["classifier"])


def test_reptile_moves_weights_to_the_mean_of_adapted_weights():
    episodes = sinusoid_episodes(tasks=3)
    learner = MetaLearner(
        tiny_mlp(),
        algorithm="reptile",
        inner_steps=2,
        inner_learning_rate=0.05,
        optimizer=keras.optimizers.SGD(1.0),
    )
    adapted = []
    for task in range(3):
        x = np.concatenate([episodes.support_x[task], episodes.query_x[task]])
        y = np.concatenate([episodes.support_y[task], episodes.query_y[task]])
        adapted.append(learner.adapted_weights(x, y, steps=2))
    learner.train_step(episodes)
    for variable, *phis in zip(learner.model.trainable_variables, *adapted, strict=True):
        np.testing.assert_allclose(variable.numpy(), np.mean(phis, axis=0), rtol=1e-10, atol=1e-12)


def test_multi_step_weights_anneal_toward_the_last_step_unless_kept_uniform():
    start = multi_step_weights(4, 0, 100).numpy()
    np.testing.assert_allclose(start, [0.25] * 4)
    end = multi_step_weights(4, 1000, 100).numpy()
    np.testing.assert_allclose(end[:3], [0.03 / 4] * 3)
    for iteration in (0, 10, 50, 100, 1000):
        assert multi_step_weights(4, iteration, 100).numpy().sum() == pytest.approx(1.0)
    np.testing.assert_allclose(multi_step_weights(4, 1000, None).numpy(), [0.25] * 4)


# --------------------------------------------------------------- training


def test_train_step_traces_once_and_anneals_the_meta_learning_rate():
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=5)
    learner = MetaLearner(tiny_mlp(dtype="float32"), inner_learning_rate=0.01, optimizer=keras.optimizers.Adam(schedule))
    tasks = SinusoidTasks(5, 5, seed=0)
    rates = []
    for _ in range(5):
        logs = learner.train_step(tasks.sample(4))
        rates.append(float(learner.optimizer.learning_rate))
        assert set(logs) == {"loss", "metric"} and np.isfinite(logs["loss"])
    assert learner.train_step_tracing_count == 1
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)


def test_maml_learns_sinusoid_regression():
    keras.utils.set_random_seed(0)
    tasks = SinusoidTasks(shots=5, queries=10, seed=0)
    learner = MetaLearner(build_mlp((1,), 1), inner_learning_rate=0.01, optimizer=keras.optimizers.Adam(3e-3))
    evaluation = tasks.sample(200, seed=99)
    untrained = learner.evaluate(evaluation, steps=1)[1].mean()
    for _ in range(500):
        learner.train_step(tasks.sample(10))
    assert learner.train_step_tracing_count == 1
    scores = learner.evaluate(evaluation, steps=[0, 1, 5])
    assert set(scores) == {0, 1, 5} and scores[1].shape == (200,)
    pre, post = scores[0].mean(), scores[1].mean()
    assert post < 0.7 * pre, (pre, post)
    assert post < 0.6 * untrained, (untrained, post)


def test_conv_train_step_runs_and_updates_moving_statistics():
    learner = MetaLearner(tiny_conv(dtype="float32"), inner_learning_rate=0.4, loss="sparse_categorical_crossentropy")
    before = [v.numpy() for v in learner.model.non_trainable_variables]
    episodes = image_episodes(tasks=3)
    episodes = Episodes(
        episodes.support_x.astype("float32") + 3.0,
        episodes.support_y,
        episodes.query_x.astype("float32"),
        episodes.query_y,
    )
    for _ in range(2):
        learner.train_step(episodes)
    # The query accuracy after each task's inner step, computed here from its fast weights.
    state = [v.value for v in learner.model.non_trainable_variables]
    accuracies = []
    for task in range(episodes.num_tasks):
        fast = learner.adapted_weights(episodes.support_x[task], episodes.support_y[task])
        logits, _ = learner.model.stateless_call(fast, state, episodes.query_x[task], training=True)
        accuracies.append(np.mean(np.argmax(logits, axis=-1) == episodes.query_y[task]))
    logs = learner.train_step(episodes)
    assert float(logs["metric"]) == pytest.approx(np.mean(accuracies), abs=1e-6)
    assert 0 < np.mean(accuracies) < 1 and learner.train_step_tracing_count == 1
    after = [v.numpy() for v in learner.model.non_trainable_variables]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


# ------------------------------------------------------------- adaptation


def test_adapt_returns_a_standard_model_with_the_fast_weights(tmp_path):
    learner = MetaLearner(tiny_mlp(dtype="float32"), inner_steps=2, inner_learning_rate=0.05)
    episodes = sinusoid_episodes(tasks=1)
    sx, sy, qx = episodes.support_x[0], episodes.support_y[0], episodes.query_x[0]
    fast = learner.adapted_weights(sx, sy, steps=3)
    state = [v.value for v in learner.model.non_trainable_variables]
    expected, _ = learner.model.stateless_call(fast, state, qx, training=True)
    model = learner.adapt(sx, sy, steps=3)
    assert model is not learner.model
    np.testing.assert_allclose(model.predict(qx, verbose=0), expected.numpy(), rtol=1e-6, atol=1e-6)
    path = tmp_path / "adapted.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(qx, verbose=0), model.predict(qx, verbose=0))
    # evaluate() scores exactly these fast weights.
    mse = learner.evaluate(episodes, steps=3)[3][0]
    assert mse == pytest.approx(float(np.mean((expected.numpy() - episodes.query_y[0]) ** 2)), rel=1e-5)


def test_adapt_with_batchnorm_uses_support_statistics(tmp_path):
    learner = MetaLearner(
        tiny_conv(dtype="float32"),
        inner_steps=2,
        inner_learning_rate=0.4,
        loss="sparse_categorical_crossentropy",
    )
    episodes = image_episodes(tasks=1)
    sx = episodes.support_x[0].astype("float32")
    sy = episodes.support_y[0]
    fast = learner.adapted_weights(sx, sy)
    state = [v.value for v in learner.model.non_trainable_variables]
    expected, _ = learner.model.stateless_call(fast, state, sx, training=True)
    model = learner.adapt(sx, sy)
    layers = [type(layer) for layer in model.layers]
    assert keras.layers.BatchNormalization in layers and ExactBatchNormalization not in layers
    np.testing.assert_allclose(model.predict(sx, verbose=0), expected.numpy(), rtol=1e-4, atol=1e-5)
    path = tmp_path / "adapted.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(sx, verbose=0), model.predict(sx, verbose=0))


def test_export_model_is_standard_and_reloads(tmp_path):
    learner = MetaLearner(tiny_conv(dtype="float32"), inner_learning_rate=0.4, loss="sparse_categorical_crossentropy")
    learner.train_step(image_episodes(tasks=2))
    exported = learner.export_model()
    assert ExactBatchNormalization not in [type(layer) for layer in exported.layers]
    for a, b in zip(exported.get_weights(), learner.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "model.keras"
    exported.save(path)
    x = image_episodes(tasks=1).query_x[0].astype("float32")
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), exported.predict(x, verbose=0))


@pytest.mark.parametrize("options", [dict(algorithm="metasgd"), dict(learn_inner_rates=True, inner_steps=2)])
def test_learned_inner_rates_are_saved_and_restored(tmp_path, options):
    tasks = SinusoidTasks(5, 5, seed=0)
    learner = MetaLearner(tiny_mlp(dtype="float32"), inner_learning_rate=0.01, **options)
    for _ in range(3):
        learner.train_step(tasks.sample(4))
    rates = learner.inner_rates()
    assert set(rates) == {v.path for v in learner.model.trainable_variables}
    assert any(not np.allclose(r, 0.01) for r in rates.values())
    path = tmp_path / "inner_rates.npz"
    learner.save_inner_rates(path)

    fresh = MetaLearner(learner.export_model(), inner_learning_rate=0.01, **options)
    fresh.load_inner_rates(path)
    for key, value in fresh.inner_rates().items():
        np.testing.assert_array_equal(value, rates[key])
    episodes = tasks.sample(1, seed=5)
    for a, b in zip(
        fresh.adapted_weights(episodes.support_x[0], episodes.support_y[0]),
        learner.adapted_weights(episodes.support_x[0], episodes.support_y[0]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="Expected inner rates"):
        fresh.set_inner_rates({"nope": np.zeros(1)})
    assert MetaLearner(tiny_mlp()).inner_rates() == {}


def test_summarize():
    mean, ci95 = summarize([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert ci95 == pytest.approx(1.96 * np.std([1, 2, 3, 4]) / 2.0)
    with pytest.raises(ValueError):
        summarize([])


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(algorithm="mamI"), "Received: algorithm='mamI'"),
        (dict(loss="mae"), "Received: loss='mae'"),
        (dict(inner_steps=-1), "Received: inner_steps=-1"),
        (dict(algorithm="fomaml", first_order=False), "first_order=False"),
        (dict(algorithm="reptile", inner_steps=0), "inner_steps=0"),
        (dict(algorithm="reptile", multi_step_loss=True), "multi_step_loss=True"),
        (dict(algorithm="metasgd", learn_inner_rates=True), "learn_inner_rates=True"),
        (dict(learn_inner_rates=True, inner_steps=0), "inner_steps=0"),
        (dict(strategy="pmap"), "Received: strategy='pmap'"),
    ],
)
def test_bad_arguments(options, match):
    with pytest.raises(ValueError, match=match):
        MetaLearner(tiny_mlp(), **options)


def test_bad_episode_shapes():
    learner = MetaLearner(tiny_mlp(dtype="float32"))
    flat = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match="support_x"):
        learner.train_step(Episodes(flat, flat, flat, flat))


def test_xla_compiled_meta_step_is_traced_once():
    keras.utils.set_random_seed(0)
    learner = MetaLearner(build_mlp((1,), 1), algorithm="maml", inner_steps=1, inner_learning_rate=0.01, jit_compile=True)
    tasks = SinusoidTasks(shots=5, queries=5, seed=0)
    losses = [float(learner.train_step(tasks.sample(4))["loss"]) for _ in range(5)]
    assert learner.train_step_tracing_count == 1 and all(np.isfinite(losses))
