"""Per-task adaptation of finished runs: transfer runs by prototypes, head or finetune; meta runs to any number of ways.

Expected figures are computed here by hand (NumPy, or plain TensorFlow
gradient steps) from the run's saved model, never by the code under test.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from workbench import runs
from workbench.adaptation import AdaptSettings, episode_scorer
from workbench.adaptation.any_way import AnyWayLearner
from workbench.cli import main
from workbench.data.episodes import EpisodeSampler
from workbench.data.glyphs import draw_glyphs
from workbench.errors import ArgumentError, DataError
from workbench.meta.learner import MetaLearner
from workbench.meta.runner import load_adaptation
from workbench.models.bases import BACKBONE
from workbench.models.builtin import build_conv4
from workbench.recipe import load_recipe
from workbench.runner import run_recipe

SIZE = 16

TRANSFER = f"""\
kind: transfer
name: tiny-transfer
seed: 3
data: {{source: synthetic, name: glyphs, classes: 6, samples: 8, validation: 0.25, test: 0.25, image_size: [{SIZE}, {SIZE}], channels: 1, batch_size: 16}}
base: {{source: builtin, name: conv4, weights: none}}
freeze: {{layers: none, batchnorm: train}}
schedule:
  - {{name: train, epochs: 1, learning_rate: 1.0e-3}}
"""

META = f"""\
kind: meta
algorithm: maml
seed: 5
tasks: {{source: synthetic, name: glyphs, classes: 20, samples: 4, ways: 5, shots: 1, queries: 1, image_size: [{SIZE}, {SIZE}], validation: 0.25, test: 0.25}}
model: {{builtin: conv4}}
inner: {{steps: 1, learning_rate: 0.1}}
outer: {{meta_batch_size: 2, iterations: 2}}
evaluation: {{tasks: 2, steps: [1], every: 2, validation_tasks: 2}}
"""


def _run(folder, text):
    path = folder / "recipe.yaml"
    path.write_text(text)
    return run_recipe(load_recipe(path), path, folder / "runs")


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("transfer"), TRANSFER)


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("meta"), META)


def _episodes(ways, shots=2, queries=3, tasks=4, size=SIZE):
    """Fixed episodes over glyph classes that no run here trained on."""
    images, labels = draw_glyphs(range(100, 100 + max(ways, 6)), shots + queries, (size, size), seed=7)
    by_class = [images[labels == label] for label in range(max(ways, 6))]
    return next(EpisodeSampler(by_class, ways, shots, queries, seed=0).fixed_tasks(tasks, seed=1, chunk_size=tasks))


def _support_folder(folder, classes, per_class, seed=9):
    """Class folders `class-00`, ... of glyph images; returns the folder, the images and their labels in folder order."""
    images, labels = draw_glyphs(range(100, 100 + classes), per_class, (SIZE, SIZE), seed=seed)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / f"class-{label:02d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"class-{label:02d}" / f"{index}.png")
    return folder, images.astype("float32"), labels


def _adapt(run_dir, support, output, *options):
    result = CliRunner().invoke(main, ["adapt", str(run_dir), "--support", str(support), *options, "-o", str(output)])
    assert result.exit_code == 0, result.output
    return result.output


def _normalized_embedding(run_dir, images):
    backbone = keras.models.load_model(run_dir / runs.MODEL_FILE).get_layer(BACKBONE)
    embedding = np.asarray(backbone.predict(np.asarray(images, "float32").reshape(-1, SIZE, SIZE, 1), verbose=0), np.float64)
    return (embedding / np.linalg.norm(embedding, axis=-1, keepdims=True)).reshape(*np.shape(images)[:-3], -1)


def _prototypes(embedding, labels, ways):
    return np.stack([embedding[labels == label].mean(axis=0) for label in range(ways)])


def test_prototypes_equal_a_hand_computation(transfer_run, tmp_path):
    episodes = _episodes(ways=3)
    scorer = episode_scorer(runs.Run(transfer_run), None)
    assert (scorer.kind, scorer.method) == ("transfer", "prototypes")
    scores = scorer.score(episodes, [2, 0])
    support = _normalized_embedding(transfer_run, episodes.support_x)
    query = _normalized_embedding(transfer_run, episodes.query_x)
    expected = []
    for task in range(episodes.num_tasks):
        centres = _prototypes(support[task], episodes.support_y[task], 3)
        distances = ((query[task][:, None, :] - centres[None]) ** 2).sum(-1)
        expected.append(np.mean(distances.argmin(-1) == episodes.query_y[task]))
    assert sorted(scores) == [0, 2]
    np.testing.assert_allclose(scores[0], expected, atol=1e-6)
    np.testing.assert_array_equal(scores[2], scores[0])  # no gradient step: the same figures at every count

    # The classifier `adapt` writes is the same rule as a plain Keras model: softmax(2 c.z - |c|^2) on normalised features.
    folder, images, labels = _support_folder(tmp_path / "support", classes=3, per_class=2)
    output = tmp_path / "prototypes.keras"
    assert _adapt(transfer_run, folder, output) == f"adapted to 3 classes from 6 images by prototypes: {output}\n"
    model = keras.models.load_model(output, safe_mode=True)
    centres = _prototypes(_normalized_embedding(transfer_run, images), labels, 3)
    probes = _normalized_embedding(transfer_run, episodes.query_x[0])
    logits = 2 * probes @ centres.T - (centres**2).sum(-1)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(model.predict(episodes.query_x[0], verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("method", ["head", "finetune"])
def test_more_steps_lower_the_support_loss_from_the_prototype_start(transfer_run, method):
    episodes = _episodes(ways=3)
    scorer = episode_scorer(runs.Run(transfer_run), AdaptSettings(method))  # the default rates: 0.01 and 0.001
    losses = scorer.support_loss(episodes, [0, 1, 5, 20])
    for fewer, more in ((0, 1), (1, 5), (5, 20)):
        assert np.all(losses[more] < losses[fewer]), (fewer, more, losses)
    prototypes = episode_scorer(runs.Run(transfer_run), AdaptSettings("prototypes")).score(episodes, [0])[0]
    np.testing.assert_allclose(scorer.score(episodes, [0, 3])[0], prototypes)


def _layer_weights(backbone, layer):
    """`{weight name: array}` of a layer of the conv4 inside a transfer run's backbone."""
    return {weight.path.rsplit("/", 1)[-1]: weight.numpy() for weight in backbone.get_layer("conv4").get_layer(layer).weights}


def test_finetune_trains_base_layers_and_keeps_batchnorm_statistics(transfer_run):
    saved = keras.models.load_model(transfer_run / runs.MODEL_FILE).get_layer(BACKBONE)
    scorer = episode_scorer(runs.Run(transfer_run), AdaptSettings("finetune", learning_rate=0.01, unfreeze={"last": 5}))
    scorer.score(_episodes(ways=3), [3])  # the base keeps the last task's adapted weights
    adapted = scorer.base.backbone
    for index in range(1, 5):
        before, after = _layer_weights(saved, f"block{index}_bn"), _layer_weights(adapted, f"block{index}_bn")
        assert sorted(after) == ["beta", "gamma", "moving_mean", "moving_variance"]
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value, err_msg=f"block{index}_bn/{name}")
    # {last: 5} is block4's convolution, BatchNorm, ReLU and pooling, and the flatten layer: only block4_conv trains.
    assert not np.array_equal(_layer_weights(adapted, "block4_conv")["kernel"], _layer_weights(saved, "block4_conv")["kernel"])
    np.testing.assert_array_equal(_layer_weights(adapted, "block3_conv")["kernel"], _layer_weights(saved, "block3_conv")["kernel"])


def test_a_transfer_run_adapted_by_head_reloads_in_a_fresh_process(transfer_run, tmp_path):
    folder, images, labels = _support_folder(tmp_path / "support", classes=4, per_class=2)
    output = tmp_path / "out" / "head.keras"
    printed = _adapt(transfer_run, folder, output, "--method", "head", "--steps", "30", "--learning-rate", "0.05")
    assert printed == f"adapted to 4 classes from 8 images by head in 30 steps: {output}\n"
    assert json.loads(output.with_suffix(".classes.json").read_text()) == [f"class-{k:02d}" for k in range(4)]
    probabilities = keras.models.load_model(output, safe_mode=True).predict(images, verbose=0)
    assert np.mean(probabilities.argmax(-1) == labels) == 1.0  # 30 steps fit the support set

    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras\n"
        "model = keras.models.load_model(sys.argv[1], safe_mode=True)\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    arguments = [output, tmp_path / "images.npy", tmp_path / "fresh.npy"]
    subprocess.run([sys.executable, "-c", script, *map(str, arguments)], check=True, timeout=120, env=environment, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "fresh.npy"), probabilities, atol=1e-6)

    predicted = CliRunner().invoke(main, ["predict", str(output), str(folder / "class-02"), "--format", "json"])
    assert predicted.exit_code == 0, predicted.output
    assert {entry["predictions"][0]["class"] for entry in json.loads(predicted.stdout)} == {"class-02"}


def test_a_five_way_meta_run_adapts_to_three_classes_as_proto_maml_by_hand(meta_run, tmp_path):
    folder, images, labels = _support_folder(tmp_path / "support", classes=3, per_class=2)
    output = tmp_path / "three.keras"
    assert _adapt(meta_run, folder, output, "--steps", "2") == f"adapted to 3 classes from 6 images in 2 steps: {output}\n"
    adapted = keras.models.load_model(output, safe_mode=True).predict(images, verbose=0)

    # By hand: the head rebuilt with kernel 2 c_k and bias -|c_k|^2 from the support features (BatchNorm on the
    # support batch), then two plain gradient steps of every weight at the run's inner rate.
    model = keras.models.load_model(meta_run / runs.MODEL_FILE)
    body = keras.Model(model.inputs, model.get_layer("head").input)
    x = tf.constant(images)
    features = body(x, training=True).numpy().astype(np.float64)
    centres = _prototypes(features, labels, 3)
    kernel, bias = tf.Variable(2 * centres.T, dtype=tf.float32), tf.Variable(-(centres**2).sum(-1), dtype=tf.float32)
    variables = [*body.trainable_variables, kernel, bias]
    rate = json.loads((meta_run / runs.ADAPTATION_FILE).read_text())["inner_learning_rate"]
    for _ in range(2):
        with tf.GradientTape() as tape:
            logits = body(x, training=True) @ kernel + bias
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        for variable, gradient in zip(variables, tape.gradient(loss, variables), strict=True):
            variable.assign(variable - rate * gradient)
    expected = tf.nn.softmax(body(x, training=True) @ kernel + bias).numpy()
    np.testing.assert_allclose(adapted, expected, atol=1e-4)


def test_a_five_way_meta_run_adapts_to_twenty_classes_that_predict_uses(meta_run, tmp_path):
    folder, _, _ = _support_folder(tmp_path / "support", classes=20, per_class=1)
    output = tmp_path / "twenty.keras"
    assert _adapt(meta_run, folder, output) == f"adapted to 20 classes from 20 images in 1 step: {output}\n"
    predicted = CliRunner().invoke(main, ["predict", str(output), str(folder), "--format", "json", "--top-k", "20"])
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.stdout)
    assert len(rows) == 20 and all(len(row["predictions"]) == 20 for row in rows)
    # One-shot prototypes start each support image nearest its own class; one inner step keeps it there.
    assert all(row["predictions"][0]["class"] == row["image"].split(os.sep)[-2] for row in rows)


def test_meta_scorer_keeps_the_runs_head_for_its_own_ways_and_rebuilds_it_for_others(meta_run):
    scorer = episode_scorer(runs.Run(meta_run), None)
    assert (scorer.kind, scorer.method, scorer.input_shape) == ("meta", "inner_loop", (SIZE, SIZE, 1))
    five = _episodes(ways=5, shots=1, queries=2, tasks=3)
    _, _, learner = load_adaptation(runs.Run(meta_run))
    expected = learner.evaluate(five, steps=[0, 1])
    got = scorer.score(five, [1, 0])
    for step in (0, 1):
        np.testing.assert_array_equal(got[step], expected[step])
    own = scorer.parameters
    for ways in (3, 20):
        scores = scorer.score(_episodes(ways=ways, shots=1, queries=2, tasks=3), [0, 2])
        assert sorted(scores) == [0, 2] and all(value.shape == (3,) and value.dtype == np.float32 for value in scores.values())
        assert scorer.parameters == own + (64 + 1) * (ways - 5)  # conv4's 64 features feed the head


def test_meta_sgd_head_rates_are_averaged_over_the_classes():
    model = build_conv4((SIZE, SIZE, 1), 5)
    learner = MetaLearner(model, algorithm="metasgd", loss="sparse_categorical_crossentropy", inner_learning_rate=0.1)
    rates = {
        key: np.random.default_rng(1).uniform(0.01, 1.0, value.shape).astype("float32") for key, value in learner.inner_rates().items()
    }
    learner.set_inner_rates(rates)
    rebuilt = AnyWayLearner(learner, 3)
    head = learner.model.get_layer("head")
    by_variable = dict(zip([id(v) for v in rebuilt.model.trainable_variables], rebuilt.rates, strict=True))
    kernel_rates = by_variable[id(rebuilt.head.kernel)].numpy()
    assert kernel_rates.shape == (64, 3)
    np.testing.assert_allclose(kernel_rates, np.repeat(rates[head.kernel.path].mean(axis=1, keepdims=True), 3, axis=1), rtol=1e-6)
    np.testing.assert_allclose(by_variable[id(rebuilt.head.bias)].numpy(), np.full(3, rates[head.bias.path].mean()), rtol=1e-6)
    conv = learner.model.get_layer("block1_conv").kernel
    np.testing.assert_array_equal(by_variable[id(conv)].numpy(), rates[conv.path])


def test_scores_come_per_task_and_episodes_of_another_shape_are_refused(transfer_run, meta_run):
    episodes = _episodes(ways=3, tasks=5)
    scorer = episode_scorer(runs.Run(transfer_run), AdaptSettings("head"))
    scores = scorer.score(episodes, [5, 0, 1])
    assert list(scores) == [0, 1, 5] and all(value.shape == (5,) for value in scores.values())
    assert scorer.parameters == scorer.base.parameters() + (64 + 1) * 3
    # The heads of a batch of tasks train as if each task were alone.
    together = scorer.support_loss(episodes, [5])[5]
    alone = [scorer.support_loss(episodes.take(slice(task, task + 1)), [5])[5][0] for task in range(5)]
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    wrong = _episodes(ways=3, tasks=2, size=SIZE + 4)
    for run_dir in (transfer_run, meta_run):
        with pytest.raises(DataError, match=r"shape \(20, 20, 1\).*takes \(16, 16, 1\)"):
            episode_scorer(runs.Run(run_dir), None).score(wrong, [0])


def test_settings_that_do_not_apply_are_refused(transfer_run, meta_run):
    with pytest.raises(ArgumentError, match="unfreeze applies to the finetune method only"):
        AdaptSettings("head", unfreeze="all")
    with pytest.raises(ArgumentError, match=r"unfreeze: last needs a whole number"):
        AdaptSettings("finetune", unfreeze={"last": -1})
    with pytest.raises(ArgumentError, match="learning rate > 0"):
        AdaptSettings("finetune", learning_rate=0.0)
    with pytest.raises(ArgumentError, match="among prototypes, head, finetune, inner_loop"):
        AdaptSettings("linear")
    with pytest.raises(ArgumentError, match="a meta run adapts with its own inner loop"):
        episode_scorer(runs.Run(meta_run), AdaptSettings("head"))
    with pytest.raises(ArgumentError, match="a transfer run adapts by prototypes, head, finetune"):
        episode_scorer(runs.Run(transfer_run), AdaptSettings("inner_loop"))
